"""A ComfyUI-compatible server for the CCC++ nodes (``ccc serve``); see docs/COMFYUI.md.

    from ccc_nodes.interfaces.server import ServerConfig, ServerThread
    with ServerThread(ServerConfig(base_dir="work")) as srv:
        print(srv.url)          # http://127.0.0.1:<free port>
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

__all__ = ["ServerConfig", "ServerThread", "create_app", "free_port", "frontend_root"]

if TYPE_CHECKING:
    from ccc_nodes.interfaces.server.app import ServerConfig, create_app, frontend_root

_APP_EXPORTS = ("ServerConfig", "create_app", "frontend_root")


def __getattr__(name: str) -> Any:
    # FastAPI (the server extra) is imported on first use, not by ``import ccc_nodes.interfaces.server``:
    # ``ccc serve``'s parser lives in this package and must load on a base install.
    if name in _APP_EXPORTS:
        from ccc_nodes.interfaces.server import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Run the server with uvicorn in a background thread (tests, benchmarks, notebooks).

    Arguments:
      config: the server's settings.
      host: interface to bind (loopback by default).
      port: TCP port; ``0`` picks a free one.
    """

    def __init__(self, config: ServerConfig, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        from ccc_nodes.interfaces.server.app import create_app

        self.host, self.port = host, port or free_port(host)
        self.app = create_app(config)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                                    ws="auto", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="ccc-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
