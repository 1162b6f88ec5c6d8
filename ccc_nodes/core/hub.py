"""Loading CCC++ models: the embedded default, a local folder, or a Hugging Face Hub repo.

A model is a folder in Hugging Face format (``config.json`` + ``model.safetensors``).
Hub downloads go through ``huggingface_hub`` and honour its cache, ``revision`` and
``HF_HUB_OFFLINE``; every failure becomes a :class:`ModelLoadError` that names the
repo, the file and how to place the file by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ccc_nodes.core.modeling import CCCNet

__all__ = ["DEFAULT_MODEL", "DEFAULT_MODEL_DIR", "ModelLoadError", "hub_error", "hub_unreachable", "load_model", "resolve_source"]

DEFAULT_MODEL = "default"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "default_model"
MODEL_FILES = ("config.json", "model.safetensors")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what and how to fix it."""


def _manual_hint(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"To place it by hand: on a machine with network run "
        f"`hf download {repo_id}{rev} --local-dir ./{repo_id.split('/')[-1]}` "
        f"(or download {', '.join(MODEL_FILES)} from https://huggingface.co/{repo_id}), copy "
        f"the folder here and pass its path instead of the repo id."
    )


def resolve_source(source: str | os.PathLike | None) -> str | Path:
    """``None``/``"default"`` -> the embedded model folder; an existing path -> Path;
    a local folder that does not exist (see :func:`missing_local_folder`) -> ModelLoadError;
    anything else is taken as a Hub repo id."""
    if source is None or str(source) == DEFAULT_MODEL:
        return DEFAULT_MODEL_DIR
    path = Path(source).expanduser()
    if path.exists():
        return path
    missing = missing_local_folder(source)
    if missing is None:
        return str(source)
    _, closest, explicit = missing
    hint = f"; did you mean {str(closest)!r}?" if closest else ""
    note = "" if explicit else f" (not tried as a Hub repo id: {str(path.parent)!r} is a local folder here)"
    raise ModelLoadError(f"model folder {str(source)!r} does not exist{hint}{note}")


def missing_local_folder(source: str | os.PathLike) -> tuple[Path, Path | None, bool] | None:
    """Whether ``source`` names a local model folder that does not exist: it starts with
    ``.``, ``/`` or ``~`` or has more than one ``/`` (explicitly a path), or its parent is
    a local folder (``runs/minee`` beside ``runs``). Returns (path, the closest existing
    sibling folder or None, explicit), or None for ``default``, an existing path or what
    can only be a Hub repo id."""
    text = str(source)
    path = Path(text).expanduser()
    if text == DEFAULT_MODEL or path.exists():
        return None
    explicit = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1)
    if not explicit and not (path.parent != Path(".") and path.parent.is_dir()):
        return None
    closest = None
    if path.parent.is_dir():
        import difflib

        names = [p.name for p in path.parent.iterdir() if p.is_dir()]
        found = difflib.get_close_matches(path.name, names, n=1)
        closest = path.parent / found[0] if found else None
    return path, closest, explicit


def _load_folder(path: Path) -> CCCNet:
    """Build the model from ``config.json`` and load ``model.safetensors`` (any float dtype)."""
    from safetensors.torch import load_model as load_safetensors

    _check_folder(path)
    model = CCCNet(**json.loads((path / "config.json").read_text()))
    try:
        load_safetensors(model, str(path / "model.safetensors"), strict=True)
    except RuntimeError:  # shapes or names that do not match the config
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for bad files
        raise ModelLoadError(f"{path / 'model.safetensors'} is not a readable safetensors file: {e}") from e
    return model


def _check_folder(path: Path) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"model path {str(path)!r} is not a folder with {', '.join(MODEL_FILES)}")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(f"model folder {str(path)!r} lacks {', '.join(missing)}")
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path / 'config.json'} is not valid JSON: {e}") from e


def hub_unreachable(repo_id: str, filename: str, revision: str | None = None, token: str | bool | None = None,
                    endpoint: str | None = None) -> str | None:
    """Why the Hub cannot be reached for ``filename`` of ``repo_id``, or None when it answers
    (whatever it answers: a missing repo is for the download to report) or when
    ``HF_HUB_OFFLINE`` is set (huggingface_hub then never asks it).

    One request, without huggingface_hub's retries: a download that cannot reach the Hub
    retries with back-off for about 30 s, printing a line each time, before it looks in the
    cache. Asked first, this lets a machine without network go straight to the cache and,
    if the file is not there, to the clear error.
    """
    from huggingface_hub import constants, errors, get_hf_file_metadata, hf_hub_url

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint), token=token,
                             timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except (errors.HfHubHTTPError, errors.OfflineModeIsEnabled):
        return None  # an HTTP answer, or offline mode: the download itself says what it means
    except Exception as e:  # noqa: BLE001 - no answer at all: DNS, refused, timeout, TLS (the HTTP client's own types)
        return (str(e) or type(e).__name__)[:200]
    return None


def _download_to(repo_id: str, folder: Path, revision: str | None, token: str | bool | None, offline: bool) -> Path:
    """The model files of ``repo_id`` in ``folder`` (downloaded, or already there when offline)."""
    from huggingface_hub import hf_hub_download

    for name in MODEL_FILES:
        hf_hub_download(repo_id, name, revision=revision, token=token, local_dir=folder, local_files_only=offline)
    return folder


def hub_error(e: Exception, repo_id: str, files: Sequence[str], revision: str | None = None, *, hint: str,
              unreachable: str | None = None, missing: str = "", error: type[Exception] = ModelLoadError) -> Exception:
    """The one-line ``error`` for a failure of huggingface_hub to get ``files`` of ``repo_id``.

    Says which case it is: the repo is not found (or private), gated, has no such revision,
    the files are not in the local cache and could not be downloaded (``unreachable``: why
    the Hub could not be reached, from :func:`hub_unreachable`), the repo has no such file
    (``missing``: what that suggests, e.g. "pass filename=."), or anything else. ``hint``
    (how to place the files by hand) ends the message where it helps. Used for CCC++
    models (:func:`load_model`) and SAM checkpoints (``ccc_nodes.steps.masks.load_sam``) alike.
    """
    from huggingface_hub import errors

    at = f" at revision {revision}" if revision else ""
    names = ", ".join(files)
    if isinstance(e, errors.GatedRepoError):
        return error(f"Hub repo {repo_id!r} is gated: accept its conditions at https://huggingface.co/{repo_id} "
                     f"and pass a token (HF_TOKEN or `hf auth login`). {hint}")
    if isinstance(e, errors.RepositoryNotFoundError):
        return error(f"Hub repo {repo_id!r} was not found (or is private: pass a token). {hint}")
    if isinstance(e, errors.RevisionNotFoundError):
        return error(f"revision {revision!r} of Hub repo {repo_id!r} does not exist")
    if isinstance(e, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        why = (f"the Hub cannot be reached: {unreachable}" if unreachable else
               f"no network, or local files only; HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}")
        return error(f"could not get {names} of Hub repo {repo_id!r}{at}: it is not in the local Hugging Face "
                     f"cache and was not downloaded ({why}). {hint}")
    if isinstance(e, errors.EntryNotFoundError):
        return error(f"Hub repo {repo_id!r}{at} has no {names}" + (f": {missing}" if missing else ".") + f" {hint}")
    return error(f"could not get {names} of Hub repo {repo_id!r}{at}: {e}. {hint}")


def _explain(e: Exception, target: str, revision: str | None, is_folder: bool,
             unreachable: str | None = None) -> ModelLoadError:
    """Turn a loading failure into a message that says what failed and what to do."""
    if isinstance(e, (ValueError, TypeError, RuntimeError, KeyError)):
        return ModelLoadError(f"{target!r} is not a valid CCC++ model: {e}")
    if is_folder:
        return ModelLoadError(f"could not read model folder {target!r}: {e}")
    return hub_error(e, target, MODEL_FILES, revision, hint=_manual_hint(target, revision), unreachable=unreachable,
                     missing="is it a CCC++ model?")


def load_model(
    source: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    device: str | torch.device = "cpu",
    local_dir: str | os.PathLike | None = None,
) -> CCCNet:
    """Load a CCC++ model in eval mode.

    Arguments:
      source: ``None`` or ``"default"`` for the embedded model, a local folder, or a Hub
        repo id (``"owner/name"``).
      revision: Hub branch, tag or commit (Hub ids only).
      cache_dir: Hugging Face cache folder (default: huggingface_hub's).
      local_files_only: never touch the network (``HF_HUB_OFFLINE=1`` does the same).
      token: Hub token for private repos.
      device: where to put the model.
      local_dir: for a Hub repo id, download its files into this folder (a model folder
        the user sees, e.g. ComfyUI's ``models/ccc/owner--name``) instead of the Hugging
        Face cache, and load them from there; without network the folder's files are used.
    """
    from huggingface_hub import errors

    resolved = resolve_source(source)
    unreachable = None
    try:
        if isinstance(resolved, Path):
            model = _load_folder(resolved)
        else:
            if not local_files_only:  # no network: the cache at once, not a storm of retries first
                unreachable = hub_unreachable(resolved, MODEL_FILES[0], revision, token)
            offline = local_files_only or unreachable is not None
            if local_dir is not None:
                model = _load_folder(_download_to(resolved, Path(local_dir), revision, token, offline))
            else:
                model = CCCNet.from_pretrained(resolved, revision=revision, cache_dir=cache_dir, token=token,
                                               local_files_only=offline)
    except ModelLoadError:
        raise
    except (OSError, ValueError, TypeError, RuntimeError, KeyError, errors.EntryNotFoundError) as e:
        raise _explain(e, str(resolved), revision, is_folder=isinstance(resolved, Path), unreachable=unreachable) from e
    return model.to(device).eval()
