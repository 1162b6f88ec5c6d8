"""The process-wide cache of loaded networks, :data:`MODELS`, shared by the nodes, the
server (which runs the nodes) and the Space.

Loading a model takes seconds; running a graph or answering a request must not. Keys are
tuples whose first item is the kind (``"ccc"``, ``"sam"``, ``"lpips"``, ...) and whose
other items say everything the value depends on (source, revision, device, ...)::

    net = cached(("sam", checkpoint, model_type, "cpu"), lambda: load_sam(checkpoint, model_type))

Two threads asking for the same key wait for one load; other keys are not held up; at
most :data:`KEEP` networks of each kind stay in memory, the least recently used dropped
first (a public Space cannot fill the memory with models).

Inside ComfyUI the cache holds its networks weakly (``weak=True``, set by the nodes): the
host owns them - its node outputs and model management hold them while graphs use them,
and when it lets them go (``POST /free`` with ``free_memory``, "Free model and node
cache") their memory is returned; the cache only spares a second load while they live.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

__all__ = ["KEEP", "MODELS", "ModelCache", "cached", "source_key"]

KEEP = 3  # networks of each kind that MODELS keeps in memory


class ModelCache:
    """Thread-safe load-once cache, bounded per kind.

    Arguments:
      keep: networks kept per kind (``key[0]``).
      weak: hold the values by weak reference: one that nothing else holds is gone (and
        loaded again when asked for).
    """

    def __init__(self, keep: int = 3, weak: bool = False):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep, self.weak = keep, weak
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()  # guards _items and _loading; never held while loading
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple[Hashable, ...], load: Callable[[], Any]) -> Any:
        """The value for ``key``, calling ``load()`` once if it is not there yet."""
        with self._lock:
            if (value := self._live(key)) is not None:
                self._items.move_to_end(key)
                return value
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if (value := self._live(key)) is not None:
                    return value
            try:
                value = load()
                self.put(key, value)  # stored before the key's lock goes: no second load
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return value

    def _live(self, key: tuple) -> Any:
        """The value of ``key`` if it is there and alive, else None (a dead weak entry is dropped)."""
        item = self._items.get(key)
        if item is not None and self.weak:
            item = item()
            if item is None:
                del self._items[key]
        return item

    def put(self, key: tuple[Hashable, ...], value: Any) -> None:
        """Store ``value`` (dropping the least recently used of its kind beyond ``keep``)."""
        with self._lock:
            self._items[key] = weakref.ref(value) if self.weak else value
            self._items.move_to_end(key)
            same_kind = [k for k in self._items if k[0] == key[0]]
            for old in same_kind[: max(0, len(same_kind) - self.keep)]:
                del self._items[old]

    def pop(self, key: tuple[Hashable, ...], default: Any = None) -> Any:
        with self._lock:
            value = self._live(key)
            self._items.pop(key, None)
            return default if value is None else value

    def clear(self) -> None:
        """Drop every network (they go once nothing else holds them)."""
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple]:
        """A snapshot of the keys of live values, least recently used first."""
        with self._lock:
            return [k for k in list(self._items) if self._live(k) is not None]

    def __iter__(self):
        return iter(self.keys())  # a snapshot: safe while other threads load

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._live(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.keys())


MODELS = ModelCache(keep=KEEP)  # the one cache of the process


def source_key(source: Any) -> Any:
    """A model source as a cache key: a file or folder on disk by its resolved path (the same
    file under two paths or through a link is one network), anything else as it is."""
    if isinstance(source, (str, os.PathLike)) and str(source):
        path = Path(source).expanduser()
        try:
            if path.exists():
                return str(path.resolve())
        except OSError:
            pass
    return source


def cached(key: tuple[Hashable, ...], load: Callable[[], Any]) -> Any:
    """``MODELS.get(key, load)``: the network of ``key``, loaded once per process."""
    return MODELS.get(key, load)
