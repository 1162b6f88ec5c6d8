"""Checkpoints: everything a run needs to continue the same trajectory, written atomically.

A checkpoint holds the model, optimiser and gradient-scaler states, the step, the
sampler position, the RNG states, the colour classes and the loss curve so far. It is
written to a temporary file in the same folder, flushed to disk and moved over the old
one with ``os.replace``, so a run killed at any moment leaves either the previous
checkpoint or the new one, never half of one. A temporary file left by a process killed
mid-write (SIGKILL gives it no chance to clean up) is removed by the next save or load.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain Python
containers only, plus exactly the numpy types of the numpy RNG state (an ``ndarray`` of
``uint32``), allowed by name. A checkpoint file can therefore not run code when loaded.
"""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import nullcontext
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["atomic_save", "load_checkpoint", "rng_state", "set_rng_state"]


def _remove_stale_temporaries(path: Path) -> None:
    """Delete ``NAME.*.tmp`` next to ``path``: what a save killed mid-write leaves."""
    for tmp in path.parent.glob(glob_escape(path.name) + ".*.tmp"):
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` via a temporary file and ``os.replace``. The file gets
    ordinary permissions (0o666 less the umask), not ``mkstemp``'s private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _numpy_rng_globals() -> list:
    """What pickling ``np.random.get_state()`` refers to besides builtins: its key array
    (an ``ndarray`` of ``uint32``, rebuilt by numpy's ``_reconstruct``)."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read (cut off, empty, not a checkpoint); one line says which."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by the trainer, on CPU (``weights_only``: no code runs)."""
    path = Path(path)
    _remove_stale_temporaries(path)
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        # Older torch cannot allow numpy's RNG array by name: it reads the trainer's own files in full.
        with allow(_numpy_rng_globals()) if allow else nullcontext():
            return torch.load(path, map_location="cpu", weights_only=allow is not None)
    except Exception as e:  # any failure: name the file and the way out
        raise CheckpointError(f"{path}: not a readable training checkpoint ({_reason(e)}); delete it to start "
                              "afresh") from e


def _reason(e: Exception) -> str:
    """One line of a load failure: for a refused object torch's line naming it, else the
    error's type and first line (a cut-off file gives e.g. ``KeyError: 97``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    named = [ln for ln in lines if "but got" in ln or "Unsupported global" in ln]
    return named[0] if named else f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
