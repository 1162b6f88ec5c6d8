"""Publish a trained model folder to the Hugging Face Hub.

    python -m training.export runs/mymodel --push-to-hub you/ccc-places365 [--private]

The folder is what the trainer wrote with ``save_pretrained`` (config.json,
model.safetensors, README.md as the model card, training.json); checkpoints and
TensorBoard logs stay local.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["PUBLISHED", "HubUploadError", "push_to_hub"]

PUBLISHED = ["config.json", "model.safetensors", "README.md", "training.json", "classes.png"]


class HubUploadError(RuntimeError):
    """The upload did not happen; the message says why and how to retry."""


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                message: str = "Upload CCC++ model") -> str:
    """Create ``repo_id`` (if needed) and upload the model files of ``folder``.
    Returns the commit URL; raises :class:`HubUploadError` on any failure."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
    if missing:
        raise HubUploadError(f"{folder} is not a saved model: {', '.join(missing)} missing")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 allow_patterns=PUBLISHED, commit_message=message)
    except Exception as e:  # every Hub or network failure gets the same way out
        raise HubUploadError(
            f"could not upload {folder} to the Hub repo {repo_id!r}: {type(e).__name__}: {e}. "
            f"The model is saved locally; retry with `python -m training.export {folder} --push-to-hub {repo_id}` "
            "once the network and a write token (`hf auth login` or HF_TOKEN) are available."
        ) from e
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a model folder written by training.train")
    p.add_argument("--push-to-hub", required=True, metavar="REPO", help="Hub repo id, e.g. you/ccc-places365")
    p.add_argument("--private", action="store_true")
    a = p.parse_args(argv)
    try:
        print(push_to_hub(a.folder, a.push_to_hub, private=a.private))
    except HubUploadError as e:
        print(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
