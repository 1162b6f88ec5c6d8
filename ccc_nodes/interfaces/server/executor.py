"""The prompt queue and its single executor, with ComfyUI's messages and history entries.

One thread runs prompts in queue order (lowest ``number`` first; ``front`` puts a prompt
ahead). Each node's outputs are cached under a signature of its class, widget values,
``IS_CHANGED`` answer and upstream signatures (:func:`graph.signatures`), so nodes that did
not change since the last prompt are not run again and are reported in
``execution_cached``. A failing node ends its prompt with ``execution_error``; the executor
goes on with the next prompt.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import json
import math
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ccc_nodes.interfaces.nodes import progress_hook
from ccc_nodes.interfaces.server.graph import execution_order, is_link, signatures

__all__ = ["Executor", "Interrupted", "PromptQueue", "QueueItem"]

Send = Callable[[str, dict, "str | None"], None]
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


class Interrupted(Exception):
    """Raised inside a running prompt after ``POST /interrupt``."""


@dataclass(order=True)
class QueueItem:
    number: float
    seq: int
    prompt_id: str = field(compare=False)
    prompt: dict = field(compare=False)
    extra_data: dict = field(compare=False)
    outputs: list[str] = field(compare=False)

    def as_list(self) -> list:
        """ComfyUI's queue entry: ``[number, prompt_id, prompt, extra_data, outputs_to_execute]``."""
        extra = {k: v for k, v in self.extra_data.items() if k not in SENSITIVE_EXTRA_DATA_KEYS}
        return [self.number, self.prompt_id, self.prompt, extra, self.outputs]


class PromptQueue:
    """Pending and running prompts plus the history of finished ones.

    Arguments:
      on_change: called (from any thread) whenever the queue length changes.
      max_pending: ``put`` refuses beyond this many waiting prompts.
      max_history: oldest history entries are dropped beyond this many.
    """

    def __init__(self, on_change: Callable[[], None], max_pending: int = 256, max_history: int = 1000):
        self.on_change, self.max_pending, self.max_history = on_change, max_pending, max_history
        self._lock = threading.Condition()
        self._heap: list[QueueItem] = []
        self._seq = itertools.count()
        self.running: dict[str, QueueItem] = {}
        self.history: OrderedDict[str, dict] = OrderedDict()

    def put(self, number: float, prompt_id: str, prompt: dict, extra_data: dict, outputs: list[str]) -> bool:
        with self._lock:
            if len(self._heap) >= self.max_pending:
                return False
            heapq.heappush(self._heap, QueueItem(number, next(self._seq), prompt_id, prompt, extra_data, outputs))
            self._lock.notify()
        self.on_change()
        return True

    def get(self, timeout: float | None = None) -> QueueItem | None:
        with self._lock:
            if not self._heap and not self._lock.wait_for(lambda: bool(self._heap), timeout):
                return None
            item = heapq.heappop(self._heap)
            self.running[item.prompt_id] = item
        self.on_change()
        return item

    def done(self, item: QueueItem, outputs: dict, meta: dict, status: dict) -> None:
        with self._lock:
            self.running.pop(item.prompt_id, None)
            self.history[item.prompt_id] = {"prompt": item.as_list(), "outputs": outputs, "status": status, "meta": meta}
            while len(self.history) > self.max_history:
                self.history.popitem(last=False)
        self.on_change()

    def remaining(self) -> int:
        with self._lock:
            return len(self._heap) + len(self.running)

    def snapshot(self) -> tuple[list, list]:
        """(running, pending) as ComfyUI's queue entries."""
        with self._lock:
            return [i.as_list() for i in self.running.values()], [i.as_list() for i in sorted(self._heap)]

    def clear(self) -> None:
        with self._lock:
            self._heap.clear()
        self.on_change()

    def delete(self, prompt_ids: list[str]) -> None:
        with self._lock:
            self._heap = [i for i in self._heap if i.prompt_id not in set(prompt_ids)]
            heapq.heapify(self._heap)
        self.on_change()

    def get_history(self, prompt_id: str | None = None, max_items: int | None = None, offset: int = -1) -> dict:
        with self._lock:
            if prompt_id is not None:
                return {prompt_id: copy.deepcopy(self.history[prompt_id])} if prompt_id in self.history else {}
            keys = list(self.history)
            if offset < 0 and max_items is not None:
                offset = len(keys) - max_items
            keys = keys[max(offset, 0) :]
            if max_items is not None:
                keys = keys[:max_items]
            return {k: copy.deepcopy(self.history[k]) for k in keys}

    def clear_history(self, prompt_ids: list[str] | None = None) -> None:
        with self._lock:
            if prompt_ids is None:
                self.history.clear()
            for pid in prompt_ids or []:
                self.history.pop(pid, None)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _plain(value: Any) -> Any:
    """A value JSON cannot hold, as one it can: a numpy or torch scalar as its number, else its text."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
        if isinstance(value, (int, float, bool)):
            return value
    return str(value)


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON (the history and the websocket must be able to send it):
    non-finite numbers become ``None``, other non-JSON values their number or text."""
    try:
        text = json.dumps(value, default=_plain)
    except (ValueError, TypeError, RecursionError) as e:
        raise TypeError(f"the node's ui output cannot be sent as JSON: {e}") from None
    return json.loads(text, parse_constant=lambda _: None,
                      parse_float=lambda t: float(t) if math.isfinite(float(t)) else None)


def _normalise_result(cls: type, result: Any) -> tuple[tuple, dict | None]:
    """A V1 node's return -> (outputs tuple, ui dict or None)."""
    ui = None
    if isinstance(result, dict):
        ui = result.get("ui")
        result = result.get("result", ())
    if result is None:
        result = ()
    if not isinstance(result, (tuple, list)):
        raise TypeError(f"{cls.__name__} returned {type(result).__name__}; a V1 node returns a tuple or a dict")
    if len(result) != len(cls.RETURN_TYPES):
        raise TypeError(f"{cls.__name__} returned {len(result)} outputs, RETURN_TYPES declares {len(cls.RETURN_TYPES)}")
    if ui is not None and not isinstance(ui, dict):
        raise TypeError(f"{cls.__name__} returned a ui of type {type(ui).__name__}; a ui is a dict")
    return tuple(result), (json_safe(ui) if ui is not None else None)


class Executor:
    """Runs queued prompts one at a time in a background thread.

    Arguments:
      queue: the :class:`PromptQueue` to take prompts from.
      registry: node class name -> V1 node class.
      send: ``send(event, data, client_id)`` posts a websocket message (thread-safe);
        ``client_id=None`` broadcasts.
    """

    def __init__(self, queue: PromptQueue, registry: Mapping[str, type], send: Send):
        self.queue, self.registry, self.send = queue, registry, send
        self.cache: dict[str, tuple[tuple, dict | None]] = {}  # signature -> (outputs, ui)
        self._interrupt = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ccc-executor", daemon=True)
        self.current: QueueItem | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._interrupt.set()
        self._thread.join(timeout)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Stop the running prompt (only if it is ``prompt_id``, when given)."""
        current = self.current
        if current is None or (prompt_id and current.prompt_id != prompt_id):
            return False
        self._interrupt.set()
        return True

    def free(self) -> None:
        """Drop cached node outputs (``POST /free``)."""
        self.cache = {}

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.5)
            if item is None:
                continue
            self.current = item
            self._interrupt.clear()
            try:
                outputs, meta, status = self.execute(item)
            except Exception as e:  # noqa: BLE001 - the executor must survive anything
                outputs, meta = {}, {}
                status = {"status_str": "error", "completed": False,
                          "messages": [["execution_error", {"prompt_id": item.prompt_id, "exception_message": str(e)}]]}
            self.current = None
            self.queue.done(item, outputs, meta, status)
            client = item.extra_data.get("client_id")
            self.send("executing", {"node": None, "prompt_id": item.prompt_id}, client)

    def execute(self, item: QueueItem) -> tuple[dict, dict, dict]:
        """Run one prompt; returns (ui outputs, meta, status) for its history entry."""
        prompt, pid, client = item.prompt, item.prompt_id, item.extra_data.get("client_id")
        messages: list[list] = []

        def message(event: str, data: dict) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            self.send(event, data, client)

        message("execution_start", {"prompt_id": pid})
        order = execution_order(prompt, item.outputs)
        sigs = signatures(prompt, order, self._is_changed(prompt, order))
        self.cache = {sigs[n]: self.cache[sigs[n]] for n in order if sigs[n] in self.cache}  # keep what is still used
        cached = [n for n in order if sigs[n] in self.cache]
        message("execution_cached", {"nodes": cached, "prompt_id": pid})
        ui_outputs: dict[str, dict] = {}
        meta: dict[str, dict] = {}
        executed: list[str] = []
        values: dict[str, tuple] = {}
        for node_id in order:
            cls = self.registry[prompt[node_id]["class_type"]]
            if sigs[node_id] in self.cache:
                values[node_id], ui = self.cache[sigs[node_id]]
            else:
                try:
                    if self._interrupt.is_set():
                        raise Interrupted()
                    self.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, client)
                    values[node_id], ui = self._run_node(node_id, cls, prompt, values, item)
                except Interrupted:
                    message("execution_interrupted", {"prompt_id": pid, "node_id": node_id,
                                                      "node_type": prompt[node_id]["class_type"], "executed": executed})
                    return ui_outputs, meta, {"status_str": "error", "completed": False, "messages": messages}
                except Exception as e:  # noqa: BLE001 - a failing node fails its prompt, not the server
                    inputs = {k: v for k, v in prompt[node_id].get("inputs", {}).items() if not is_link(v)}
                    message("execution_error", {
                        "prompt_id": pid, "node_id": node_id, "node_type": prompt[node_id]["class_type"],
                        "executed": executed, "exception_message": str(e),
                        "exception_type": f"{type(e).__module__}.{type(e).__qualname__}",
                        "traceback": traceback.format_tb(e.__traceback__), "current_inputs": inputs,
                        "current_outputs": list(values)})
                    return ui_outputs, meta, {"status_str": "error", "completed": False, "messages": messages}
                self.cache[sigs[node_id]] = (values[node_id], ui)
                executed.append(node_id)
            if ui:
                ui_outputs[node_id] = ui
                meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
                self.send("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": pid}, client)
        message("execution_success", {"prompt_id": pid})
        return ui_outputs, meta, {"status_str": "success", "completed": True, "messages": messages}

    def _is_changed(self, prompt: dict, order: list[str]) -> dict[str, Any]:
        answers: dict[str, Any] = {}
        for node_id in order:
            cls = self.registry[prompt[node_id]["class_type"]]
            check = getattr(cls, "IS_CHANGED", None)
            if check is None:
                continue
            args = {k: v for k, v in prompt[node_id].get("inputs", {}).items() if not is_link(v)}
            try:
                answers[node_id] = check(**args)
            except Exception as e:  # noqa: BLE001 - unknown means changed
                answers[node_id] = f"error {time.time_ns()} {e}"
            if isinstance(answers[node_id], float) and answers[node_id] != answers[node_id]:  # NaN: always run
                answers[node_id] = f"nan {time.time_ns()}"
        return answers

    def _run_node(self, node_id: str, cls: type, prompt: dict, values: dict, item: QueueItem) -> tuple[tuple, dict | None]:
        kwargs: dict[str, Any] = {}
        spec = cls.INPUT_TYPES()
        for name, value in prompt[node_id].get("inputs", {}).items():
            if name not in spec.get("required", {}) and name not in spec.get("optional", {}):
                continue  # ComfyUI ignores inputs a node does not declare
            kwargs[name] = values[str(value[0])][value[1]] if is_link(value) else value
        for name, kind in spec.get("hidden", {}).items():
            kwargs[name] = {"PROMPT": prompt, "EXTRA_PNGINFO": item.extra_data.get("extra_pnginfo"),
                            "UNIQUE_ID": node_id}.get(kind)

        last: list = [None]

        def hook(done: int, total: int) -> None:
            if self._interrupt.is_set():
                raise Interrupted()
            if last[0] != (done, total):  # the same value again is a node asking for an interrupt only
                last[0] = (done, total)
                self.send("progress", {"value": done, "max": total, "prompt_id": item.prompt_id, "node": node_id},
                          item.extra_data.get("client_id"))

        token = progress_hook.set(hook)
        try:
            return _normalise_result(cls, getattr(cls(), cls.FUNCTION)(**kwargs))
        finally:
            progress_hook.reset(token)
