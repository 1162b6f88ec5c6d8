"""The routes the ComfyUI web frontend needs to start and to keep its state: ``/users``,
``/settings``, ``/userdata`` (saved workflows, templates). One user, ``default``, stored
under ``<base>/user/default``; every name passes :meth:`Folders.resolve`.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ccc_nodes.interfaces.server.files import Folders, atomic_write
from ccc_nodes.interfaces.server.jsonbody import BodyError, parse_json
from ccc_nodes.interfaces.server.safety import USERDATA_CSP

__all__ = ["userdata_router"]

SETTINGS_FILE = "comfy.settings.json"
# User data the editor reads (workflows, settings, templates as JSON; user.css) is sent as
# these types, which a browser never runs; the rest is sent as a download.
INERT_TYPES = {".json": "application/json", ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
# Until the user changes them: skip the first-run template gallery (this server ships no
# templates) and keep the editor from calling out to the internet for release notes.
DEFAULT_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False}


def _info(path: Path, root: Path) -> dict:
    st = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": st.st_size, "modified": st.st_mtime,
            "created": st.st_ctime}


def userdata_router(folders: Folders) -> APIRouter:
    router = APIRouter()
    root = folders.user / "default"
    for sub in ("workflows", "subgraphs"):  # the editor lists these on start
        (root / sub).mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def settings() -> dict:
        try:
            stored = parse_json((root / SETTINGS_FILE).read_bytes())
        except (OSError, BodyError):
            return dict(DEFAULT_SETTINGS)
        return {**DEFAULT_SETTINGS, **stored} if isinstance(stored, dict) else dict(DEFAULT_SETTINGS)

    async def body_json(request: Request):
        try:
            return parse_json(await request.body()), None
        except BodyError as e:
            return None, JSONResponse({"error": f"the body is not valid JSON: {e}"}, status_code=400)

    def save_settings(values: dict) -> None:
        atomic_write(root / SETTINGS_FILE, json.dumps(values, indent=2).encode())

    def user_path(name: str, must_exist: bool = False) -> Path:
        return folders.resolve(root, urllib.parse.unquote(name), must_exist=must_exist)

    def in_the_way(path: Path) -> Response | None:
        """409 when a folder has the file's name, or a file a folder's on the way to it."""
        blocked = folders.in_the_way(root, path)
        return Response("A file or folder of that name is in the way", status_code=409) if blocked else None

    @router.get("/users")
    def get_users():
        return {"storage": "server", "migrated": True}

    @router.post("/users")
    def post_users():
        return JSONResponse({"error": "this server has a single user"}, status_code=400)

    @router.get("/settings")
    def get_settings():
        return settings()

    @router.get("/settings/{setting_id}")
    def get_setting(setting_id: str):
        return settings().get(setting_id)

    @router.post("/settings")
    async def post_settings(request: Request):
        values, refused = await body_json(request)
        if refused is not None:
            return refused
        if not isinstance(values, dict):
            return JSONResponse({"error": "settings must be a JSON object"}, status_code=400)
        with lock:
            save_settings({**settings(), **values})
        return Response(status_code=200)

    @router.post("/settings/{setting_id}")
    async def post_setting(setting_id: str, request: Request):
        value, refused = await body_json(request)
        if refused is not None:
            return refused
        with lock:
            save_settings({**settings(), setting_id: value})
        return Response(status_code=200)

    @router.get("/userdata")
    def list_userdata(dir: str = "", recurse: str = "", full_info: str = "", split: str = ""):  # noqa: A002
        if not dir:
            return Response("Directory not provided", status_code=400)
        folder = user_path(dir.rstrip("/"))
        if not folder.is_dir():
            return Response("Directory not found", status_code=404)
        files = sorted(folder.rglob("*") if recurse.lower() == "true" else folder.glob("*"))
        out = []
        for f in files:
            if not f.is_file() or f.is_symlink() or f.name.startswith("."):
                continue
            rel = f.relative_to(folder).as_posix()
            if full_info.lower() == "true":
                out.append(_info(f, folder))
            elif split.lower() == "true":
                out.append([rel, *rel.split("/")])
            else:
                out.append(rel)
        return out

    @router.get("/v2/userdata")
    def list_userdata_v2(path: str = ""):
        folder = user_path(path.rstrip("/")) if path.strip("/") else root
        if not folder.is_dir():
            return Response("Directory not found", status_code=404)
        out = []
        for f in sorted(folder.iterdir()):
            if f.is_symlink() or f.name.startswith("."):
                continue
            entry = {"name": f.name, "path": f.relative_to(root).as_posix(), "type": "directory" if f.is_dir() else "file"}
            if f.is_file():
                entry.update(size=f.stat().st_size, modified=f.stat().st_mtime)
            out.append(entry)
        return out

    @router.get("/userdata/{file:path}")
    def get_userdata(file: str):
        path = user_path(file, must_exist=True)
        headers = {"Content-Security-Policy": USERDATA_CSP}
        kind = INERT_TYPES.get(path.suffix.lower())
        if kind is None:  # anything else is a download, never rendered from this origin
            kind = "application/octet-stream"
            headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{urllib.parse.quote(path.name)}"
        return FileResponse(path, media_type=kind, headers=headers)

    @router.post("/userdata/{file:path}")
    async def post_userdata(file: str, request: Request, overwrite: str = "true", full_info: str = "false"):
        if "/move/" in file:
            source, _, dest = file.partition("/move/")
            return move_userdata(source, dest, overwrite)
        path = user_path(file)
        if (refused := in_the_way(path)) is not None:
            return refused
        if overwrite == "false" and path.exists():
            return Response("File already exists", status_code=409)
        body = await request.body()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, body)
        return _info(path, root) if full_info.lower() == "true" else path.relative_to(root).as_posix()

    def move_userdata(source: str, dest: str, overwrite: str) -> Response | dict | str:
        src, dst = user_path(source, must_exist=True), user_path(dest)
        if (refused := in_the_way(dst)) is not None:
            return refused
        if overwrite == "false" and dst.exists():
            return Response("File already exists", status_code=409)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return dst.relative_to(root).as_posix()

    @router.delete("/userdata/{file:path}")
    def delete_userdata(file: str):
        user_path(file, must_exist=True).unlink()
        return Response(status_code=204)

    return router

