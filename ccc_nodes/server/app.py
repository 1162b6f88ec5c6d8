"""A FastAPI server that speaks ComfyUI's HTTP and websocket API.

Routes (each also under ``/api``, as ComfyUI does): ``POST/GET /prompt``, ``GET
/object_info[/{class}]``, ``GET/POST /history[/{id}]``, ``GET /view``, ``POST
/upload/image``, ``GET/POST /queue``, ``POST /interrupt``, ``POST /free``, ``GET
/system_stats``, ``/features``, ``/embeddings``, ``/extensions``, ``/models``, the
frontend's user data routes and the ``/ws?clientId=`` websocket, one small group of
them per function in :mod:`.routes`. With the ``comfyui-frontend-package`` installed,
``/`` serves ComfyUI's node editor.

Safety: a :class:`Guard` in front of everything checks the optional bearer token, without
one answers only loopback and listed host names (DNS rebinding), refuses cross-origin
requests (a web page cannot drive a local server), caps request bodies and adds nosniff
and a CSP to every response (rules in :mod:`.safety`); graph size and queue length are
capped; ``/view`` and uploads stay inside their folders; locked, the model loaders load
only the server's models.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import html
import json
import logging
import math
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .. import nodes as ccc_nodes
from ..extras import install_command
from ..images import ImageError
from .executor import Executor, PromptQueue
from .files import FileError, Folders
from .graph import error_answer, node_info, validate_prompt
from .image_nodes import image_nodes
from .jsonbody import BodyError, json_problem, parse_json
from .model_nodes import ModelFolders, model_nodes
from .routes import WEB_DIR, api_router
from .safety import CSP, host_allowed
from .system import COMFYUI_API_VERSION

__all__ = ["COMFYUI_API_VERSION", "ServerConfig", "create_app", "frontend_root"]

log = logging.getLogger("ccc_nodes.server")

PACK_MODULE = "custom_nodes.ccc_nodes"
MB = 1024 * 1024
UPLOAD_ROUTES = frozenset({"/upload/image", "/api/upload/image"})  # the only routes with the upload cap


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


def frontend_root() -> Path | None:
    """The static folder of the installed ``comfyui-frontend-package``, if any."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
    return root if (root / "index.html").is_file() else None


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


# ------------------------------------------------------------------ guard
class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: bearer token, same-origin check and body size caps, for HTTP and
    websockets alike (placed outside every route, so nothing reaches a handler unchecked)."""

    def __init__(self, app, token: str | None, max_body: int, max_upload: int, allowed_hosts: tuple[str, ...] = ()):
        self.app, self.token, self.max_body, self.max_upload = app, token, max_body, max_upload
        self.allowed_hosts = tuple(allowed_hosts)

    def _authorized(self, headers: dict[bytes, bytes], query: dict) -> tuple[bool, bool]:
        """(allowed, came through the query string)."""
        if not self.token:
            return True, False
        want = self.token.encode()
        auth = headers.get(b"authorization", b"")
        if auth.lower().startswith(b"bearer ") and hmac.compare_digest(auth[7:].strip(), want):
            return True, False
        cookie = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        if "ccc_token" in cookie and hmac.compare_digest(cookie["ccc_token"].value.encode(), want):
            return True, False
        given = query.get("token", [""])[0].encode()
        if given and hmac.compare_digest(given, want):
            return True, True
        return False, False

    async def _refuse(self, scope, send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4000 + status if status < 1000 else 1008})
            return
        body = json.dumps(error_answer("refused", message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *_safety_headers([])]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", []))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        origin = headers.get(b"origin", b"").decode("latin-1")
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.token and not host_allowed(host, self.allowed_hosts):  # DNS rebinding
            return await self._refuse(scope, send, 403, f"host {host[:100]!r} refused: without a token this server "
                                      "answers only to loopback names and the names given with --allow-host")
        if origin and urlsplit(origin).netloc != host:
            return await self._refuse(scope, send, 403, f"cross-origin request from {origin} refused")
        ok, by_query = self._authorized(headers, query)
        if not ok:
            return await self._refuse(scope, send, 401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        limit = self.max_upload if scope["path"] in UPLOAD_ROUTES else self.max_body
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return await self._refuse(scope, send, 413, f"request body over the limit of {limit} bytes")
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        async def marked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": _safety_headers(list(message.get("headers", [])))}
                if by_query:  # let the browser carry the token from now on
                    cookie = f"ccc_token={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()
                    message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        try:
            await self.app(scope, counted_receive, marked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send, 413, f"request body over the limit of {limit} bytes")


def _safety_headers(headers: list) -> list:
    """``headers`` with nosniff and, unless the route set a stricter one, the server's CSP."""
    names = {k.lower() for k, _ in headers}
    if b"x-content-type-options" not in names:
        headers.append((b"x-content-type-options", b"nosniff"))
    if b"content-security-policy" not in names:
        headers.append((b"content-security-policy", CSP.encode()))
    return headers


# ------------------------------------------------------------------ the server object
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


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """Build the app; the executor thread starts and stops with the app's lifespan."""
    config = config or ServerConfig()
    if config.web_root is None:
        config.web_root = frontend_root()
    server = PromptServer(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.loop = asyncio.get_running_loop()
        server.messages = asyncio.Queue()
        publisher = asyncio.create_task(server.publish())
        server.executor.start()
        try:
            yield
        finally:
            server.executor.stop()
            publisher.cancel()

    app = FastAPI(title="CCC++ ComfyUI-compatible server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(FileError)
    async def file_error(request: Request, e: FileError):
        return JSONResponse(error_answer("invalid_path", str(e)), e.status)

    @app.exception_handler(ImageError)
    async def image_error(request: Request, e: ImageError):
        return JSONResponse(error_answer("invalid_image", str(e)), 400)

    router = api_router(server)
    app.include_router(router, prefix="/api")
    app.include_router(router)

    @app.get("/templates/index.json")
    def core_templates():
        return []  # ComfyUI's own templates (the comfyui-workflow-templates package) are not served here

    @app.get("/")
    def index():
        if config.web_root is None:
            return HTMLResponse("<h1>CCC++ server</h1><p>The ComfyUI API is up. For the node editor install the "
                                f"<code>server</code> extra (<code>{html.escape(install_command('server'))}</code>), "
                                "which brings <code>comfyui-frontend-package</code>, and restart.</p>")
        return FileResponse(config.web_root / "index.html", headers={"Cache-Control": "no-cache"})

    if WEB_DIR.is_dir():
        app.mount("/extensions/ccc_nodes", StaticFiles(directory=WEB_DIR), name="ccc_web")
    if config.web_root is not None:
        app.mount("/", StaticFiles(directory=config.web_root), name="frontend")
    app.add_middleware(Guard, token=config.token, max_body=config.max_body_bytes, max_upload=config.max_upload_bytes,
                       allowed_hosts=tuple(config.allowed_hosts))
    return app
