"""The server's routes, one small function per group, each an :class:`APIRouter` on one
:class:`~ccc_nodes.interfaces.server.prompt_server.PromptServer`; :func:`api_router` joins them (the app mounts
it at ``/`` and at ``/api``, as ComfyUI does).

- :func:`socket_routes`: ``/ws?clientId=``, the websocket of progress and status messages;
- :func:`prompt_routes`: ``/prompt``, ``/queue``, ``/interrupt``, ``/free``;
- :func:`history_routes`: ``/history[/{id}]``;
- :func:`object_info_routes`: ``/object_info[/{class}]``, the nodes the editor can place;
- :func:`image_routes`: ``/view`` and ``/upload/image`` (:mod:`.imagefiles`);
- :func:`system_routes`: ``/system_stats``, ``/features``, ``/embeddings``, ``/models``;
- :func:`frontend_routes`: what the editor asks for at start: ``/extensions``, ``/i18n``,
  ``/workflow_templates``;
- the editor's user data (:func:`.userdata.userdata_router`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response

from ccc_nodes.core.cache import MODELS
from ccc_nodes.interfaces.server.graph import error_answer
from ccc_nodes.interfaces.server.imagefiles import upload_image, view_image
from ccc_nodes.interfaces.server.jsonbody import BodyError, parse_json
from ccc_nodes.interfaces.server.system import system_stats
from ccc_nodes.interfaces.server.userdata import userdata_router

if TYPE_CHECKING:
    from ccc_nodes.interfaces.server.prompt_server import PromptServer

__all__ = ["TEMPLATES_DIR", "TEMPLATE_PACK", "WEB_DIR", "api_router", "features"]

log = logging.getLogger("ccc_nodes.interfaces.server")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# The pack's template workflows (ComfyUI lists a pack's example_workflows/ in its template
# browser): in the checkout, beside the package; an installed wheel has none.
TEMPLATES_DIR = Path(__file__).resolve().parents[3] / "example_workflows"
TEMPLATE_PACK = "ccc-nodes"  # the custom_nodes folder name ComfyUI lists them under


def api_router(server: PromptServer) -> APIRouter:
    """Every route of ``server``."""
    r = APIRouter()
    for group in (socket_routes, prompt_routes, object_info_routes, history_routes, image_routes, system_routes,
                  frontend_routes):
        r.include_router(group(server))
    r.include_router(userdata_router(server.folders))
    return r


def features(server: PromptServer) -> dict:
    return {"supports_preview_metadata": False, "max_upload_size": server.config.max_upload_bytes}


async def _json(request: Request) -> dict:
    """A body of the queue, history, interrupt and free routes; one that is not a JSON
    object asks for nothing, as in ComfyUI's lenient handlers."""
    try:
        body = parse_json(await request.body() or b"{}")
    except BodyError:
        return {}
    return body if isinstance(body, dict) else {}


async def _clear_or_delete(request: Request, clear: Callable[[], None], delete: Callable[[list[str]], None]) -> Response:
    """ComfyUI's ``{"clear": true}`` / ``{"delete": [ids]}`` bodies of /queue and /history."""
    body = await _json(request)
    if body.get("clear"):
        clear()
    if isinstance(body.get("delete"), list):
        delete([str(x) for x in body["delete"]])
    return Response(status_code=200)


def socket_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

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
                    await ws.send_text(json.dumps({"type": "feature_flags", "data": features(server)}))
                first = False
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if server.sockets.get(sid) is ws:
                server.sockets.pop(sid, None)

    return r


def prompt_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

    @r.get("/prompt")
    def get_prompt():
        return server.status()

    @r.post("/prompt")
    async def post_prompt(request: Request):
        status, answer = await asyncio.to_thread(server.post_prompt, await request.body())
        return JSONResponse(answer, status)

    @r.get("/queue")
    def queue():
        running, pending = server.queue.snapshot()
        return {"queue_running": running, "queue_pending": pending}

    @r.post("/queue")
    async def post_queue(request: Request):
        return await _clear_or_delete(request, server.queue.clear, server.queue.delete)

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
        if body.get("unload_models"):  # as ComfyUI's: the loaded networks go too (loaded again when next needed)
            MODELS.clear()
        return Response(status_code=200)

    return r


def history_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

    @r.get("/history")
    def history(max_items: int | None = None, offset: int = -1):
        return server.queue.get_history(max_items=max_items, offset=offset)

    @r.get("/history/{prompt_id}")
    def history_one(prompt_id: str):
        return server.queue.get_history(prompt_id)

    @r.post("/history")
    async def post_history(request: Request):
        return await _clear_or_delete(request, server.queue.clear_history, server.queue.clear_history)

    return r


def object_info_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

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

    return r


def image_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

    @r.get("/view")
    def view(request: Request):
        return view_image(server.folders, dict(request.query_params), server.config.max_image_pixels)

    @r.post("/upload/image")
    async def upload(request: Request):
        return await upload_image(server.folders, request, server.config.max_image_pixels)

    return r


def system_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()

    @r.get("/system_stats")
    def stats():
        return system_stats()

    @r.get("/features")
    def feature_flags():
        return features(server)

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

    return r


def frontend_routes(server: PromptServer) -> APIRouter:
    r = APIRouter()
    web_root = server.config.web_root

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
            return JSONResponse(error_answer("not_found", f"no template {pack}/{filename}"), 404)
        return FileResponse(path, media_type="application/json" if suffix == "json" else "image/jpeg")

    return r
