"""A FastAPI server that speaks ComfyUI's HTTP and websocket API.

Routes (each also under ``/api``, as ComfyUI does): ``POST/GET /prompt``, ``GET
/object_info[/{class}]``, ``GET/POST /history[/{id}]``, ``GET /view``, ``POST
/upload/image``, ``GET/POST /queue``, ``POST /interrupt``, ``POST /free``, ``GET
/system_stats``, ``/features``, ``/embeddings``, ``/extensions``, ``/models``, the
frontend's user data routes and the ``/ws?clientId=`` websocket. With the
``comfyui-frontend-package`` installed, ``/`` serves ComfyUI's node editor.

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
import io
import json
import logging
import math
import mimetypes
import os
import platform
import shutil
import sys
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .. import nodes as ccc_nodes
from ..images import IMAGE_SUFFIXES, ImageError, check_frames, open_image
from .executor import Executor, PromptQueue
from .files import FileError, Folders, sha256_file
from .graph import node_info, validate_prompt
from .image_nodes import MAX_FRAMES, image_nodes
from .jsonbody import BodyError, json_problem, parse_json
from .model_nodes import ModelFolders, model_nodes
from .safety import CSP, host_allowed
from .userdata import userdata_router

__all__ = ["COMFYUI_API_VERSION", "ServerConfig", "create_app", "frontend_root"]

log = logging.getLogger("ccc_nodes.server")

COMFYUI_API_VERSION = "0.3.64"  # the ComfyUI release whose API and frontend (1.27.10) this server follows
PACK_MODULE = "custom_nodes.ccc_nodes"
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# The pack's template workflows (ComfyUI lists a pack's example_workflows/ in its template
# browser): in the checkout, beside the package; an installed wheel has none.
TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
TEMPLATE_PACK = "ccc-nodes"  # the custom_nodes folder name ComfyUI lists them under
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


def _error(kind: str, message: str, details: str = "") -> dict:
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


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
        body = json.dumps(_error("refused", message)).encode()
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
            return 400, _error("invalid_prompt", "The request body is not valid JSON", str(e))
        return self.queue_prompt(body, checked=True)

    def queue_prompt(self, body: Any, checked: bool = False) -> tuple[int, dict]:
        """Validate and queue a ``POST /prompt`` body; (HTTP status, answer). Whatever is
        queued is strict JSON, so the queue and history can always be sent back."""
        if not isinstance(body, dict):
            return 400, _error("invalid_prompt", "The request body must be a JSON object with a 'prompt'")
        if "prompt" not in body:
            return 400, _error("no_prompt", "No prompt provided", "No prompt provided")
        problem = None if checked else json_problem(body)
        if problem is not None:
            return 400, _error("invalid_prompt", "The request body is not valid JSON", problem)
        prompt = body["prompt"]
        if isinstance(prompt, dict) and len(prompt) > self.config.max_nodes:
            return 400, _error("prompt_too_large", f"The graph has {len(prompt)} nodes; this server takes at most "
                               f"{self.config.max_nodes}", "raise --max-nodes to allow larger graphs")
        given_number = None
        if "number" in body:
            given_number = _number(body["number"])
            if given_number is None:
                value = body["number"]
                shown = repr(value[:50]) if isinstance(value, str) else type(value).__name__
                return 400, _error("invalid_prompt", "number must be a finite number (or a string of one)",
                                   f"number: {shown}")
        prompt_id = body.get("prompt_id")
        if (problem := _id_problem(prompt_id, "prompt_id")) is not None:
            return 400, _error("invalid_prompt", problem, "prompt_id")
        extra = body.get("extra_data")
        if extra is not None and not isinstance(extra, dict):
            return 400, _error("invalid_prompt", f"extra_data must be an object, got {type(extra).__name__}", "extra_data")
        extra = dict(extra or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if (problem := _id_problem(extra.get("client_id"), "client_id")) is not None:
            return 400, _error("invalid_prompt", problem, "client_id")
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
            return 429, _error("queue_full", f"{self.config.max_queue} prompts are already waiting; try again later")
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}

    def object_info(self, name: str) -> dict:
        return node_info(name, self.registry[name], self.display_names.get(name), self.modules.get(name, "nodes"))


# ------------------------------------------------------------------ routes
def _view(server: PromptServer, params: dict[str, str]) -> Response:
    filename = params.get("filename", "")
    kind = params.get("type") or "output"
    for tag in ("input", "output", "temp"):  # ComfyUI's annotated names: "x.png [output]"
        if filename.endswith(f" [{tag}]"):
            filename, kind = filename[: -len(tag) - 3], tag
    folders = server.folders
    path = folders.resolve(folders.root(kind), filename, params.get("subfolder", ""), must_exist=True)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileError(f"{filename!r} is not an image; /view serves images only", 403)
    preview, channel = params.get("preview"), params.get("channel", "rgba")
    if not preview and channel == "rgba":
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                            headers={"Content-Disposition": f'filename="{path.name}"'})
    im = open_image(path, server.config.max_image_pixels)
    fmt, quality = "png", 90
    if preview:
        fmt, *rest = preview.split(";")
        fmt = fmt if fmt in ("webp", "jpeg") else "webp"
        if rest and rest[-1].isascii() and rest[-1].isdigit() and len(rest[-1]) <= 3:
            quality = min(max(int(rest[-1]), 1), 100)
    if channel == "a":
        im = im.convert("RGBA").getchannel("A") if "A" in im.getbands() else im.convert("L").point(lambda _: 255)
    elif channel == "rgb" or fmt == "jpeg":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format=fmt.upper(), quality=quality)
    return Response(buf.getvalue(), media_type=f"image/{fmt}", headers={"Content-Disposition": f'filename="{path.name}"'})


async def _upload(server: PromptServer, request: Request) -> Response:
    form = await request.form()
    image = form.get("image")
    if image is None or not hasattr(image, "read") or not getattr(image, "filename", ""):
        return JSONResponse(_error("invalid_upload", "send the file as multipart field 'image' with a file name"), 400)
    kind = str(form.get("type") or "input")
    subfolder = str(form.get("subfolder") or "")
    folders = server.folders
    root = folders.root(kind)
    name = Path(str(image.filename).replace("\\", "/")).name  # browsers may send a path
    target = folders.resolve(root, name, subfolder)
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileError(f"{name!r}: only images ({', '.join(sorted(IMAGE_SUFFIXES))}) are accepted")
    if (blocked := folders.in_the_way(root, target)) is not None:
        raise FileError(f"cannot upload {name!r} there: {blocked}", 409)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    # copying, decoding and hashing take a while on a large image: in a worker thread, so
    # that the event loop goes on serving every other request meanwhile
    final = await asyncio.to_thread(_store_upload, server, image.file, target, name, overwrite)
    return JSONResponse({"name": final.name, "subfolder": subfolder, "type": kind})


def _store_upload(server: PromptServer, source, target: Path, name: str, overwrite: bool) -> Path:
    """Copy an upload to a temporary file beside ``target``, check it is a real image
    within the pixel cap, and link or rename it into place; the name it got."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".part-{uuid.uuid4().hex}{target.suffix}"
    try:
        with open(tmp, "wb") as f:
            source.seek(0)
            shutil.copyfileobj(source, f, 1 << 20)
        try:
            # a real, readable image whose frames (as LoadImage takes them) are within the pixel cap together
            check_frames(tmp, server.config.max_image_pixels, MAX_FRAMES)
            open_image(tmp, server.config.max_image_pixels)
        except ImageError as e:
            raise FileError(f"{name!r}: {str(e).removeprefix(str(tmp) + ': ')}") from e
        final = target
        if overwrite:
            os.replace(tmp, final)
        else:
            stem, suffix, i = target.stem, target.suffix, 1
            while True:
                if final.is_file() and sha256_file(final) == sha256_file(tmp):
                    break  # the same image is already there: reuse its name
                try:
                    os.link(tmp, final)  # atomic and never overwrites
                    break
                except FileExistsError:
                    final = target.with_name(f"{stem} ({i}){suffix}")
                    i += 1
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes: psutil's figures, else /proc/meminfo's (Linux),
    else the physical pages with the available ones where the system tells them."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return vm.total, vm.available
    except ImportError:
        pass
    try:
        fields = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0]) * 1024
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, ValueError, KeyError, IndexError):
        pass
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    total = os.sysconf("SC_PHYS_PAGES") * page if page else 0
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError):
        free = 0  # unknown: never reported as all of it
    return total, free


def _system_stats() -> dict:
    import torch

    ram_total, ram_free = _memory()
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        device = {"name": torch.cuda.get_device_name(), "type": "cuda", "index": torch.cuda.current_device(),
                  "vram_total": total, "vram_free": free, "torch_vram_total": total, "torch_vram_free": free}
    else:
        device = {"name": "cpu", "type": "cpu", "index": None, "vram_total": ram_total, "vram_free": ram_free,
                  "torch_vram_total": ram_total, "torch_vram_free": ram_free}
    return {
        "system": {"os": os.name, "ram_total": ram_total, "ram_free": ram_free, "comfyui_version": COMFYUI_API_VERSION,
                   "ccc_nodes_version": __version__, "required_frontend_version": "1.27.10",
                   "python_version": sys.version, "pytorch_version": torch.__version__, "embedded_python": False,
                   "argv": sys.argv, "platform": platform.platform()},
        "devices": [device],
    }


def _router(server: PromptServer) -> APIRouter:
    r = APIRouter()
    web_root = server.config.web_root

    @r.websocket("/ws")
    async def websocket(ws: WebSocket, clientId: str = ""):  # noqa: N803 - ComfyUI's parameter name
        await ws.accept()
        sid = clientId[:128] or uuid.uuid4().hex
        server.sockets[sid] = ws
        try:
            await ws.send_text(json.dumps({"type": "status", "data": {"status": server.status(), "sid": sid}}))
            first = True
            while True:
                text = await ws.receive_text()
                try:
                    msg = json.loads(text)
                except json.JSONDecodeError:
                    continue
                if first and isinstance(msg, dict) and msg.get("type") == "feature_flags":
                    await ws.send_text(json.dumps({"type": "feature_flags", "data": _features(server)}))
                first = False
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if server.sockets.get(sid) is ws:
                server.sockets.pop(sid, None)

    @r.get("/prompt")
    def get_prompt():
        return server.status()

    @r.post("/prompt")
    async def post_prompt(request: Request):
        status, answer = await asyncio.to_thread(server.post_prompt, await request.body())
        return JSONResponse(answer, status)

    @r.get("/object_info")
    def object_info():
        out = {}
        for name in server.registry:
            try:
                out[name] = server.object_info(name)
            except Exception:  # noqa: BLE001 - one broken node must not hide the others
                log.exception("object_info of %s failed", name)
        return out

    @r.get("/object_info/{node_class}")
    def object_info_one(node_class: str):
        return {node_class: server.object_info(node_class)} if node_class in server.registry else {}

    @r.get("/history")
    def history(max_items: int | None = None, offset: int = -1):
        return server.queue.get_history(max_items=max_items, offset=offset)

    @r.get("/history/{prompt_id}")
    def history_one(prompt_id: str):
        return server.queue.get_history(prompt_id)

    async def clear_or_delete(request: Request, clear, delete) -> Response:
        """ComfyUI's ``{"clear": true}`` / ``{"delete": [ids]}`` bodies of /queue and /history."""
        body = await _json(request)
        if body.get("clear"):
            clear()
        if isinstance(body.get("delete"), list):
            delete([str(x) for x in body["delete"]])
        return Response(status_code=200)

    @r.post("/history")
    async def post_history(request: Request):
        return await clear_or_delete(request, server.queue.clear_history, server.queue.clear_history)

    @r.get("/queue")
    def queue():
        running, pending = server.queue.snapshot()
        return {"queue_running": running, "queue_pending": pending}

    @r.post("/queue")
    async def post_queue(request: Request):
        return await clear_or_delete(request, server.queue.clear, server.queue.delete)

    @r.post("/interrupt")
    async def interrupt(request: Request):
        body = await _json(request)
        server.executor.interrupt(body.get("prompt_id"))
        return Response(status_code=200)

    @r.post("/free")
    async def free(request: Request):
        body = await _json(request)
        if body.get("free_memory") or body.get("unload_models"):
            server.executor.free()
        return Response(status_code=200)

    @r.get("/view")
    def view(request: Request):
        return _view(server, dict(request.query_params))

    @r.post("/upload/image")
    async def upload_image(request: Request):
        return await _upload(server, request)

    @r.get("/system_stats")
    def system_stats():
        return _system_stats()

    @r.get("/features")
    def features():
        return _features(server)

    @r.get("/embeddings")
    def embeddings():
        return []

    @r.get("/models")
    def models():
        return ["ccc", "sams"]

    @r.get("/models/{folder}")
    def models_in(folder: str):
        if folder == "ccc":
            return sorted(server.models.ccc_models())
        if folder == "sams":
            return sorted(server.models.sam_checkpoints())
        return Response(status_code=404)

    @r.get("/experiment/models")
    def experiment_models():
        return [{"name": kind, "folders": [str(p) for p in server.models.folders(kind)]} for kind in ("ccc", "sams")]

    @r.get("/extensions")
    def extensions():
        found = []
        if web_root is not None:
            found += ["/" + p.relative_to(web_root).as_posix() for p in sorted((web_root / "extensions").rglob("*.js"))]
        if WEB_DIR.is_dir():
            found += [f"/extensions/ccc_nodes/{p.relative_to(WEB_DIR).as_posix()}" for p in sorted(WEB_DIR.rglob("*.js"))]
        return found

    @r.get("/i18n")
    def i18n():
        return {}

    @r.get("/workflow_templates")
    def workflow_templates():
        names = sorted(p.stem for p in TEMPLATES_DIR.glob("*.json")) if TEMPLATES_DIR.is_dir() else []
        return {TEMPLATE_PACK: names} if names else {}

    @r.get("/workflow_templates/{pack}/{filename}")
    def workflow_template(pack: str, filename: str):
        stem, _, suffix = filename.rpartition(".")
        path = TEMPLATES_DIR / filename
        if pack != TEMPLATE_PACK or suffix not in ("json", "jpg") or stem not in workflow_templates().get(pack, []):
            return JSONResponse(_error("not_found", f"no template {pack}/{filename}"), 404)
        return FileResponse(path, media_type="application/json" if suffix == "json" else "image/jpeg")

    r.include_router(userdata_router(server.folders))
    return r


def _features(server: PromptServer) -> dict:
    return {"supports_preview_metadata": False, "max_upload_size": server.config.max_upload_bytes}


async def _json(request: Request) -> dict:
    """A body of the queue, history, interrupt and free routes; one that is not a JSON
    object asks for nothing, as in ComfyUI's lenient handlers."""
    try:
        body = parse_json(await request.body() or b"{}")
    except BodyError:
        return {}
    return body if isinstance(body, dict) else {}


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
        return JSONResponse(_error("invalid_path", str(e)), e.status)

    @app.exception_handler(ImageError)
    async def image_error(request: Request, e: ImageError):
        return JSONResponse(_error("invalid_image", str(e)), 400)

    router = _router(server)
    app.include_router(router, prefix="/api")
    app.include_router(router)

    @app.get("/templates/index.json")
    def core_templates():
        return []  # ComfyUI's own templates (the comfyui-workflow-templates package) are not served here

    @app.get("/")
    def index():
        if config.web_root is None:
            return HTMLResponse("<h1>CCC++ server</h1><p>The ComfyUI API is up. For the node editor install the "
                                "<code>server</code> extra (<code>pip install 'ccc-nodes[server]'</code>), which "
                                "brings <code>comfyui-frontend-package</code>, and restart.</p>")
        return FileResponse(config.web_root / "index.html", headers={"Cache-Control": "no-cache"})

    if WEB_DIR.is_dir():
        app.mount("/extensions/ccc_nodes", StaticFiles(directory=WEB_DIR), name="ccc_web")
    if config.web_root is not None:
        app.mount("/", StaticFiles(directory=config.web_root), name="frontend")
    app.add_middleware(Guard, token=config.token, max_body=config.max_body_bytes, max_upload=config.max_upload_bytes,
                       allowed_hosts=tuple(config.allowed_hosts))
    return app
