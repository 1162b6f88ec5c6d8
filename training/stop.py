"""Stopping a run: Ctrl-C and SIGTERM end it after the current step with a checkpoint,
all DDP ranks at the same step; a second signal aborts, and main() says what was saved."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import torch

from training import dist
from training.log import Log

STOP_CHECK_EVERY = 10  # DDP: steps between the ranks' agreement on stopping (a host sync)


class Progress:
    """How far the run got, for what main() says when a second Ctrl-C aborts it."""

    started = False  # the training loop has begun
    saved: int | None = None  # the step of the last checkpoint on disk
    ckpt: Path | None = None

    @classmethod
    def reset(cls, ckpt: Path) -> None:
        cls.started, cls.saved, cls.ckpt = False, None, ckpt

    @classmethod
    def interrupted(cls) -> str:
        if not cls.started:
            return "interrupted before training started; nothing was saved"
        if cls.saved is None:
            return "interrupted during training, before its first checkpoint: nothing was saved"
        return (f"interrupted during training; the last checkpoint (step {cls.saved}) is {cls.ckpt}: "
                "the same command with --resume continues from it")


class Stop:
    """Ctrl-C / SIGTERM during training: finish the step, checkpoint, exit 128 + signal.
    A second signal stops at once (the handlers are the defaults again)."""

    def __init__(self, log: Log):
        self.signum: int | None = None
        self.log = log
        self.installed = False

    def __enter__(self) -> Stop:
        import threading

        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self.old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            self.installed = True
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self._restore()
        self.log.print(f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                       "(again to abort without one)")

    def _restore(self) -> None:
        if self.installed:
            for sig, old in self.old.items():
                signal.signal(sig, old)
            self.installed = False

    def __exit__(self, *exc) -> None:
        self._restore()


def all_done(done: bool, args: argparse.Namespace, d: dist.Dist, device: torch.device, step: int) -> bool:
    """Under DDP time and signals are per process: the ranks agree every STOP_CHECK_EVERY steps
    (a host sync) and at --steps, so all stop at the same step."""
    if not d.enabled:
        return done
    last = bool(args.steps) and step >= args.steps  # the same step on every rank
    return d.any(done, device) if last or step % STOP_CHECK_EVERY == 0 else False


def stopped(signum: int, step: int, ckpt_path: Path, d: dist.Dist, log: Log) -> int:
    """Say where the signal stopped the run and close it; the exit status, 128 + the signal."""
    log.print(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint {ckpt_path} saved: "
              "the same command with --resume continues the run")
    d.close()
    log.close()
    return 128 + signum
