"""A FastAPI server that speaks ComfyUI's HTTP and websocket API.

Routes (each also under ``/api``, as ComfyUI does): ``POST/GET /prompt``, ``GET
/object_info[/{class}]``, ``GET/POST /history[/{id}]``, ``GET /view``, ``POST
/upload/image``, ``GET/POST /queue``, ``POST /interrupt``, ``POST /free``, ``GET
/system_stats``, ``/features``, ``/embeddings``, ``/extensions``, ``/models``, the
frontend's user data routes and the ``/ws?clientId=`` websocket, one small group of
them per function in :mod:`.routes`. With the ``comfyui-frontend-package`` installed,
``/`` serves ComfyUI's node editor.

Safety: a :class:`~.guard.Guard` in front of everything checks the optional bearer token, without
one answers only loopback and listed host names (DNS rebinding), refuses cross-origin
requests (a web page cannot drive a local server), caps request bodies and adds nosniff
and a CSP to every response (rules in :mod:`.safety`); graph size and queue length are
capped; ``/view`` and uploads stay inside their folders; locked, the model loaders load
only the server's models.
"""

from __future__ import annotations

import asyncio
import html
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ccc_nodes import __version__
from ccc_nodes.core.extras import install_command
from ccc_nodes.core.images import ImageError
from ccc_nodes.interfaces.server.files import FileError
from ccc_nodes.interfaces.server.graph import error_answer
from ccc_nodes.interfaces.server.guard import Guard
from ccc_nodes.interfaces.server.prompt_server import PromptServer, ServerConfig
from ccc_nodes.interfaces.server.routes import WEB_DIR, api_router
from ccc_nodes.interfaces.server.system import COMFYUI_API_VERSION

__all__ = ["COMFYUI_API_VERSION", "ServerConfig", "create_app", "frontend_root"]


def frontend_root() -> Path | None:
    """The static folder of the installed ``comfyui-frontend-package``, if any."""
    try:
        import comfyui_frontend_package
    except ImportError:
        return None
    root = Path(comfyui_frontend_package.__file__).resolve().parent / "static"
    return root if (root / "index.html").is_file() else None


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
