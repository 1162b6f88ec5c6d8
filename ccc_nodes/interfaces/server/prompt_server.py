"""The server's state: its settings (:class:`ServerConfig`) and :class:`PromptServer`, the
queue, history, node registry and websocket messages the routes (:mod:`.routes`) read and
write. The app (:mod:`.app`) builds one and mounts the routes on it."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import WebSocket

from ccc_nodes.interfaces import nodes as ccc_nodes
from ccc_nodes.interfaces.server.executor import Executor, PromptQueue
from ccc_nodes.interfaces.server.files import Folders
from ccc_nodes.interfaces.server.graph import error_answer, node_info, validate_prompt
from ccc_nodes.interfaces.server.image_nodes import image_nodes
from ccc_nodes.interfaces.server.jsonbody import BodyError, json_problem, parse_json
from ccc_nodes.interfaces.server.model_nodes import ModelFolders, model_nodes

__all__ = ["MB", "PromptServer", "ServerConfig"]

log = logging.getLogger("ccc_nodes.interfaces.server")

PACK_MODULE = "custom_nodes.ccc_nodes"
MB = 1024 * 1024


@dataclass
class ServerConfig:
    """Settings of one server.

    Arguments:
      base_dir: holds ``input/``, ``output/``, ``temp/`` and ``user/``.
      models_dir: holds ``ccc/`` (model folders) and ``sams/`` (SAM checkpoints), for
        this server only (the process environment is left alone). ``None`` follows
        ``$CCC_MODELS_DIR`` (default ``./models``), as the nodes do elsewhere.
      token: when set, every request needs ``Authorization: Bearer <token>`` (or
        ``?token=`` once, which sets a cookie for the browser).
      max_upload_bytes: largest accepted upload (413 beyond).
      max_body_bytes: largest other request body, e.g. a graph (413 beyond).
      max_image_pixels: uploads and loaded images larger than this are refused.
      max_nodes: largest accepted graph.
      max_queue: most prompts waiting; more are refused with 429.
      max_history: finished prompts kept in ``/history``.
      web_root: the editor's static files; ``None`` finds comfyui-frontend-package.
      allowed_hosts: without a token, host names served besides the loopback ones (the
        ``Host`` header of any other request gets 403: DNS rebinding).
      locked: model loaders load only the folders under ``models_dir`` and
        ``allowed_repos``; a ``repo_or_path`` naming anything else is refused without
        saying whether it exists.
      allowed_repos: Hub repo ids the loaders may load when locked.
    """

    base_dir: Path = Path("ccc_server")
    models_dir: Path | None = None
    token: str | None = None
    max_upload_bytes: int = 32 * MB
    max_body_bytes: int = 8 * MB
    max_image_pixels: int = 40_000_000
    max_nodes: int = 500
    max_queue: int = 256
    max_history: int = 1000
    web_root: Path | None = None
    allowed_hosts: tuple[str, ...] = ()
    locked: bool = False
    allowed_repos: tuple[str, ...] = ()
    extra_nodes: dict[str, type] = field(default_factory=dict)


MAX_ID_CHARS = 128  # prompt_id, client_id


def _number(value: Any) -> float | None:
    """A prompt's queue position as ComfyUI takes it (``float(number)``: a number or a
    numeric string), when finite; else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _id_problem(value: Any, what: str) -> str | None:
    """Why ``value`` is not a usable id (absent, or a string of at most MAX_ID_CHARS), or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if len(value) > MAX_ID_CHARS:
        return f"{what} is longer than {MAX_ID_CHARS} characters"
    return None


class PromptServer:
    """State of one running server: registry, queue, executor, websocket clients."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.folders = Folders(config.base_dir)
        models_dir = Path(config.models_dir).expanduser().resolve() if config.models_dir is not None else None
        self.models = ModelFolders(models_dir)
        self.registry: dict[str, type] = {**ccc_nodes.NODE_CLASS_MAPPINGS, **model_nodes(self.models, config.locked, config.allowed_repos),
                                          **image_nodes(self.folders, config.max_image_pixels), **config.extra_nodes}
        self.display_names = dict(ccc_nodes.NODE_DISPLAY_NAME_MAPPINGS)
        self.modules = {name: PACK_MODULE for name in ccc_nodes.NODE_CLASS_MAPPINGS}
        self.queue = PromptQueue(self.queue_changed, config.max_queue, config.max_history)
        self.executor = Executor(self.queue, self.registry, self.send)
        self.sockets: dict[str, WebSocket] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.messages: asyncio.Queue | None = None
        self.number = 0
        self.number_lock = threading.Lock()

    # messages ----------------------------------------------------------
    def send(self, event: str, data: dict, sid: str | None = None) -> None:
        """Queue a websocket message from any thread; ``sid=None`` broadcasts."""
        if self.loop is not None and self.messages is not None:
            self.loop.call_soon_threadsafe(self.messages.put_nowait, (event, data, sid))

    def status(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_changed(self) -> None:
        self.send("status", {"status": self.status()})

    async def publish(self) -> None:
        assert self.messages is not None
        while True:
            event, data, sid = await self.messages.get()
            text = json.dumps({"type": event, "data": data}, default=str)
            targets = list(self.sockets.items()) if sid is None else [(sid, self.sockets.get(sid))]
            for key, ws in targets:
                if ws is None:
                    continue
                try:
                    await asyncio.wait_for(ws.send_text(text), timeout=10)
                except Exception:  # noqa: BLE001 - a gone client is dropped, others go on
                    if self.sockets.get(key) is ws:
                        self.sockets.pop(key, None)

    # prompts -----------------------------------------------------------
    def post_prompt(self, raw: bytes) -> tuple[int, dict]:
        """``POST /prompt`` (in a worker thread: a large body takes a while to parse and check)."""
        try:
            body = parse_json(raw)
        except BodyError as e:
            return 400, error_answer("invalid_prompt", "The request body is not valid JSON", str(e))
        return self.queue_prompt(body, checked=True)

    def queue_prompt(self, body: Any, checked: bool = False) -> tuple[int, dict]:
        """Validate and queue a ``POST /prompt`` body; (HTTP status, answer). Whatever is
        queued is strict JSON, so the queue and history can always be sent back."""
        if not isinstance(body, dict):
            return 400, error_answer("invalid_prompt", "The request body must be a JSON object with a 'prompt'")
        if "prompt" not in body:
            return 400, error_answer("no_prompt", "No prompt provided", "No prompt provided")
        problem = None if checked else json_problem(body)
        if problem is not None:
            return 400, error_answer("invalid_prompt", "The request body is not valid JSON", problem)
        prompt = body["prompt"]
        if isinstance(prompt, dict) and len(prompt) > self.config.max_nodes:
            return 400, error_answer("prompt_too_large", f"The graph has {len(prompt)} nodes; this server takes at most "
                               f"{self.config.max_nodes}", "raise --max-nodes to allow larger graphs")
        given_number = None
        if "number" in body:
            given_number = _number(body["number"])
            if given_number is None:
                value = body["number"]
                shown = repr(value[:50]) if isinstance(value, str) else type(value).__name__
                return 400, error_answer("invalid_prompt", "number must be a finite number (or a string of one)",
                                   f"number: {shown}")
        prompt_id = body.get("prompt_id")
        if (problem := _id_problem(prompt_id, "prompt_id")) is not None:
            return 400, error_answer("invalid_prompt", problem, "prompt_id")
        extra = body.get("extra_data")
        if extra is not None and not isinstance(extra, dict):
            return 400, error_answer("invalid_prompt", f"extra_data must be an object, got {type(extra).__name__}", "extra_data")
        extra = dict(extra or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if (problem := _id_problem(extra.get("client_id"), "client_id")) is not None:
            return 400, error_answer("invalid_prompt", problem, "client_id")
        prompt = copy.deepcopy(prompt)
        targets = body.get("partial_execution_targets")
        ok, error, outputs, node_errors = validate_prompt(prompt, self.registry, targets)
        if not ok:
            log.warning("invalid prompt: %s", error)
            return 400, {"error": error, "node_errors": node_errors}
        with self.number_lock:
            if given_number is not None:
                number = given_number
            else:
                number = -self.number if body.get("front") else self.number
                self.number += 1
        prompt_id = prompt_id or str(uuid.uuid4())
        if not self.queue.put(number, prompt_id, prompt, extra, outputs):
            return 429, error_answer("queue_full", f"{self.config.max_queue} prompts are already waiting; try again later")
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    def object_info(self, name: str) -> dict:
        return node_info(name, self.registry[name], self.display_names.get(name), self.modules.get(name, "nodes"))
