"""Stopping on SIGINT / SIGTERM, also when the signal lands inside a callback from C code.

    with stop_on_signals():      # the CLI's commands run in here
        for frame in frames:
            ...                  # FFmpeg writes through a Python file object
            raise_pending()      # a stop that C code dropped is raised here

In the block, SIGINT and SIGTERM raise :class:`Stopped` (a ``KeyboardInterrupt``) where Python
happens to be, so every ``finally`` runs and removes its half-written output. When that is
inside a callback C code made (PyAV's write callback is a Cython function that cannot pass an
exception on), the exception is printed and dropped, and the run would go on and finish as if
never stopped. So the handler also notes the signal, the dropped exception is not printed, and
loops that run such C code call :func:`raise_pending` between their steps. (Not
``SystemExit`` for SIGTERM: dropped there, it would end the process at once, every
``finally`` skipped.)
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Stopped", "raise_pending", "stop_on_signals"]

_pending: list[int] = []  # signals whose stop was raised and may have been dropped


class Stopped(KeyboardInterrupt):
    """The stop a signal asked for; ``code`` is the exit status that says so (128 + signal)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.code = signum, 128 + signum


def _handle(signum: int, frame) -> None:
    _pending.append(signum)
    raise Stopped(signum)


def raise_pending() -> None:
    """Raise the stop of a signal that arrived in the block (it may have been dropped)."""
    if _pending:
        signum = _pending[0]
        _pending.clear()
        raise Stopped(signum)


def _quiet_unraisable(previous):
    def hook(unraisable) -> None:
        if not (_pending and isinstance(unraisable.exc_value, Stopped)):  # else raised again by raise_pending
            previous(unraisable)

    return hook


def _quiet_excepthook(previous):
    def hook(kind, value, traceback) -> None:
        if not (_pending and isinstance(value, Stopped)):
            previous(kind, value, traceback)

    return hook


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop the block by :class:`Stopped`, noted for :func:`raise_pending`
    (outside the main thread, where handlers cannot be set, the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    hooks = sys.unraisablehook, sys.excepthook  # C code prints a dropped exception through these
    sys.unraisablehook, sys.excepthook = _quiet_unraisable(hooks[0]), _quiet_excepthook(hooks[1])
    _pending.clear()
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        sys.unraisablehook, sys.excepthook = hooks
        _pending.clear()
