"""Checkpoints: everything a run needs to continue the same trajectory, written atomically.

A checkpoint is a :class:`RunState`, saved and restored as one thing: the model,
optimiser, gradient-scaler and weight-average states, the step, the sampler position,
the RNG states, the colour classes and the loss curve so far. It is written to a
temporary file in the same folder, flushed to disk and moved over the old one with
``os.replace``, so a run killed at any moment leaves either the previous checkpoint or
the new one, never half of one. A temporary file left by a process killed mid-write
(SIGKILL gives it no chance to clean up) is removed by the next save or load.

Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain Python
containers only, plus exactly the numpy types of the numpy RNG state (an ``ndarray`` of
``uint32``), allowed by name. A checkpoint file can therefore not run code when loaded.
"""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CheckpointError", "RunState", "atomic_save", "load_checkpoint", "rng_state", "set_rng_state"]


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


def _no_skipped() -> dict:
    return {"corrupt": 0, "grey": 0}


@dataclass
class RunState:
    """A training run as its checkpoint holds it: what the same command with ``--resume``
    needs to continue on the same trajectory.

    Shared by the ranks (saved by rank 0): the model, optimiser, gradient scaler, weight
    average (timm's ``ModelEmaV3``, or None), the colour classes and the data's class
    counts they came from, the step, the training seconds so far, the loss curve and the
    files skipped at decoding. Each rank's own (gathered into ``ranks``): its RNG states,
    the samples it has seen, the batches it has drawn (the sampler's position) and the
    indices of the files its stream skipped."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: torch.nn.Module | None
    classes: Any  # ccc_nodes.core.classes.ColorClasses
    counts: torch.Tensor | None
    step: int = 0
    elapsed: float = 0.0
    losses: list = field(default_factory=list)  # (step, loss) every --log-every steps
    skipped: dict[str, int] = field(default_factory=_no_skipped)  # memory mode: files that did not decode
    seen: int = 0
    drawn: int = 0
    skipped_ids: dict[str, set[int]] = field(default_factory=lambda: {"corrupt": set(), "grey": set()})

    def save(self, path: str | os.PathLike, d, args: dict) -> None:
        """Gather every rank's part (a collective: all ranks call it) and, on rank 0, write
        the checkpoint atomically with the run's options ``args`` (what ``--resume`` checks)."""
        mine = {"rng": rng_state(), "seen": self.seen, "drawn": self.drawn,
                "skipped_ids": {k: sorted(v) for k, v in self.skipped_ids.items()}}
        ranks = d.gather(mine)
        if d.main:
            atomic_save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "scaler": self.scaler.state_dict(),
                         **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
                         "step": self.step, "elapsed": self.elapsed, "losses": self.losses, "skipped": self.skipped,
                         "ranks": ranks, "classes": self.classes.to_config(), "counts": self.counts, "args": args},
                        path)

    def restore(self, checkpoint: dict, rank: int) -> bool:
        """Continue from ``checkpoint`` (from :func:`load_checkpoint`) as ``rank``; a rank the
        checkpoint's run did not have takes rank 0's part. The classes and counts are the
        checkpoint's already (the model was built with them). Returns False when the run
        averages weights but the checkpoint holds no average: it starts at the resumed weights."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.elapsed = checkpoint["step"], checkpoint["elapsed"]
        self.losses, self.skipped = checkpoint["losses"], checkpoint["skipped"]
        ranks = checkpoint["ranks"]
        mine = ranks[rank] if rank < len(ranks) else ranks[0]
        self.seen, self.drawn = mine["seen"], mine["drawn"]
        self.skipped_ids = {k: set(v) for k, v in mine["skipped_ids"].items()}
        set_rng_state(mine["rng"])
        if self.ema is None:
            return True
        if "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
            return True
        self.ema.set(self.model)  # a checkpoint from before the average
        return False
