"""The process-wide cache of loaded networks, :data:`MODELS`, shared by the nodes, the
server (which runs the nodes) and the Space.

Loading a model takes seconds; running a graph or answering a request must not. Keys are
tuples whose first item is the kind (``"ccc"``, ``"sam"``, ``"lpips"``, ...) and whose
other items say everything the value depends on (source, revision, device, ...)::

    net = cached(("sam", checkpoint, model_type, "cpu"), lambda: load_sam(checkpoint, model_type))

Two threads asking for the same key wait for one load; other keys are not held up; at
most :data:`KEEP` networks of each kind stay in memory, the least recently used dropped
first (a public Space cannot fill the memory with models).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["KEEP", "MODELS", "ModelCache", "cached"]

KEEP = 3  # networks of each kind that MODELS keeps in memory


class ModelCache:
    """Thread-safe load-once cache, bounded per kind.

    Arguments:
      keep: networks kept per kind (``key[0]``).
    """

    def __init__(self, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()  # guards _items and _loading; never held while loading
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple[Hashable, ...], load: Callable[[], Any]) -> Any:
        """The value for ``key``, calling ``load()`` once if it is not there yet."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                value = load()
                self.put(key, value)  # stored before the key's lock goes: no second load
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            return value

    def put(self, key: tuple[Hashable, ...], value: Any) -> None:
        """Store ``value`` (dropping the least recently used of its kind beyond ``keep``)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            same_kind = [k for k in self._items if k[0] == key[0]]
            for old in same_kind[: max(0, len(same_kind) - self.keep)]:
                del self._items[old]

    def pop(self, key: tuple[Hashable, ...], default: Any = None) -> Any:
        with self._lock:
            return self._items.pop(key, default)

    def clear(self) -> None:
        """Drop every network (they go once nothing else holds them)."""
        with self._lock:
            self._items.clear()

    def keys(self) -> list[tuple]:
        """A snapshot of the keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def __iter__(self):
        return iter(self.keys())  # a snapshot: safe while other threads load

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


MODELS = ModelCache(keep=KEEP)  # the one cache of the process


def cached(key: tuple[Hashable, ...], load: Callable[[], Any]) -> Any:
    """``MODELS.get(key, load)``: the network of ``key``, loaded once per process."""
    return MODELS.get(key, load)
