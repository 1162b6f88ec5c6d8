"""Publish a trained model folder to the Hugging Face Hub.

    python -m training.export runs/mymodel --push-to-hub you/ccc-places365 [--private]

The folder is what the trainer wrote with ``save_pretrained`` (config.json,
model.safetensors, README.md as the model card, training.json); checkpoints and
TensorBoard logs stay local.
"""

from __future__ import annotations

import argparse
import shlex
import socket
import sys
from pathlib import Path

from ccc_nodes.core.hub import MODEL_FILES

__all__ = ["PUBLISHED", "HubUploadError", "UploadArgumentError", "push_to_hub"]

# What the trainer writes into a model folder and is published (those present are uploaded).
PUBLISHED = ["config.json", "model.safetensors", "README.md", "training.json"]
# Exception classes (by name, across huggingface_hub's HTTP clients) that mean the Hub was not reached.
_NETWORK_ERRORS = {"TransportError", "NetworkError", "ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException",
                   "ConnectionError", "Timeout", "ProxyError", "OfflineModeIsEnabled"}


class HubUploadError(RuntimeError):
    """The upload did not happen; the message says why and how to retry."""


class UploadArgumentError(HubUploadError):
    """The folder or the repo id is wrong: nothing was sent."""


def _network_failure(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)) or \
                any(c.__name__ in _NETWORK_ERRORS for c in type(e).__mro__):
            return True
        e = e.__cause__ or e.__context__
    return False


def retry_command(folder: str | Path, repo_id: str, private: bool = False) -> str:
    return shlex.join(["python", "-m", "training.export", str(folder), "--push-to-hub", repo_id,
                       *(["--private"] if private else [])])


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                message: str = "Upload CCC++ model") -> str:
    """Create ``repo_id`` (if needed) and upload the model files of ``folder`` (those of
    :data:`PUBLISHED` it holds). Returns the commit URL; raises
    :class:`UploadArgumentError` for a folder that is not a model or an invalid repo id
    (before any network access), :class:`HubUploadError` for any other failure."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HFValidationError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    if not folder.is_dir():
        raise UploadArgumentError(f"{folder} is not a folder (give the model folder training.train wrote)")
    missing = [f for f in MODEL_FILES if not (folder / f).is_file()]
    if missing:
        raise UploadArgumentError(f"{folder} is not a saved model: {', '.join(missing)} missing")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UploadArgumentError(f"{repo_id!r} is not a valid Hub repo id ({str(e).rstrip('.')}); use owner/name, "
                                  "e.g. you/ccc-places365") from None
    files = [f for f in PUBLISHED if (folder / f).is_file()]
    retry = retry_command(folder, repo_id, private)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 allow_patterns=files, commit_message=message)
    except Exception as e:  # noqa: BLE001 - every Hub failure becomes one message with the way out
        status = getattr(getattr(e, "response", None), "status_code", None)
        head = f"could not upload {folder} to the Hub repo {repo_id!r}: {type(e).__name__}: {e}. The model is saved locally"
        if _network_failure(e):
            why = f"; retry with `{retry}` once the network is available"
        elif isinstance(e, LocalTokenNotFoundError) or status == 401:
            why = f"; log in with a write token (`hf auth login` or HF_TOKEN), then run `{retry}`"
        elif status == 403:
            why = f"; the token may not write to {repo_id!r} (read-only token, or another owner's namespace): " \
                  f"use a write token for that namespace, then run `{retry}`"
        else:
            why = f"; retry with `{retry}`"
        raise HubUploadError(head + why) from e
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a model folder written by training.train")
    p.add_argument("--push-to-hub", required=True, metavar="REPO", help="Hub repo id, e.g. you/ccc-places365")
    p.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its setting)")
    a = p.parse_args(argv)
    try:
        print(push_to_hub(a.folder, a.push_to_hub, private=a.private))
    except UploadArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HubUploadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
