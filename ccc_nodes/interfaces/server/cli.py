"""``ccc serve``: the ComfyUI-compatible server and, with the ``server`` extra, its node editor.

    ccc serve [--host 127.0.0.1] [--port 8188] [--dir ccc_server] [--models models] [--token T]
              [--allow-host NAME] [--locked | --no-locked] [--allow-repo ID]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ccc_nodes.interfaces.server.safety import is_loopback

__all__ = ["add_parser"]


def server_config(args: argparse.Namespace, token: str | None):
    """The :class:`ServerConfig` of ``ccc serve``'s arguments (locked by default beyond loopback)."""
    from ccc_nodes.interfaces.server.prompt_server import MB, ServerConfig

    return ServerConfig(base_dir=Path(args.dir), models_dir=Path(args.models) if args.models else None, token=token,
                        max_upload_bytes=args.max_upload_mb * MB, max_image_pixels=args.max_pixels,
                        max_nodes=args.max_nodes, max_queue=args.max_queue,
                        # the address it binds is a name it answers to
                        allowed_hosts=(*args.allow_host, *([args.host] if args.host not in ("0.0.0.0", "::") else [])),
                        locked=not is_loopback(args.host) if args.locked is None else args.locked,
                        allowed_repos=tuple(args.allow_repo))


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ccc_nodes.interfaces.server.app import create_app
    except ImportError as e:
        from ccc_nodes.core.extras import missing_module

        print(f"error: {missing_module(e, 'the server', 'server')}", file=sys.stderr)
        return 2
    token = args.token or os.environ.get("CCC_SERVER_TOKEN") or None
    if not is_loopback(args.host) and not token and not args.no_token:
        print(f"error: --host {args.host} exposes the server beyond this machine; give --token (or set "
              "CCC_SERVER_TOKEN), or pass --no-token if the network is trusted", file=sys.stderr)
        return 2
    config = server_config(args, token)
    app = create_app(config)
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    editor = "the node editor" if app.state.server.config.web_root else "the API (no editor: install the server extra)"
    print(f"serving {editor} at {where}/{'?token=…' if token else ''}  (files in {config.base_dir.resolve()})",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ws="auto")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("serve",  # help line: cli.SUBCOMMANDS
                              description="Serve ComfyUI's HTTP/websocket API with the CCC++ nodes and LoadImage, "
                                          "SaveImage, PreviewImage; with comfyui-frontend-package installed, "
                                          "the node editor at /.")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8188, help="TCP port (default 8188, as ComfyUI)")
    p.add_argument("--dir", default="ccc_server", help="folder for input/, output/, temp/, user/ (default ./ccc_server)")
    p.add_argument("--models", default=None, help="folder with ccc/ (model folders) and sams/ (SAM checkpoints); "
                                                   "default $CCC_MODELS_DIR or ./models")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (or ?token= once in the "
                                                 "browser); default $CCC_SERVER_TOKEN")
    p.add_argument("--no-token", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="without a token, also answer requests for this host name (repeatable); by default only "
                        "localhost, 127.0.0.0/8 and [::1] (and --host's address) are served, against DNS rebinding")
    p.add_argument("--locked", action=argparse.BooleanOptionalAction, default=None,
                   help="model loaders load only the models under --models and --allow-repo ids, never a path or "
                        "Hub id a client sends (default: locked when --host is beyond loopback)")
    p.add_argument("--allow-repo", action="append", default=[], metavar="ID",
                   help="a Hub repo id the loaders may load when locked (repeatable)")
    p.add_argument("--max-upload-mb", type=int, default=32, help="largest upload in MiB (default 32)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest image in pixels (default 40,000,000)")
    p.add_argument("--max-nodes", type=int, default=500, help="largest graph in nodes (default 500)")
    p.add_argument("--max-queue", type=int, default=256, help="most waiting prompts (default 256)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=cmd_serve)
