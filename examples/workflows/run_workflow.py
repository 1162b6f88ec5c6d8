"""Run an API-format workflow on a ComfyUI-compatible server (ComfyUI itself or ``ccc serve``).

    python examples/workflows/run_workflow.py colorize_api.json --image grey.jpg \
        [--server http://127.0.0.1:8188] [--set 2.model=small] [-o out/]

Uploads ``--image`` with ``POST /upload/image`` and points every LoadImage node at it,
queues the graph with ``POST /prompt``, waits for ``/history/{prompt_id}`` and downloads
every output image with ``/view``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


def _call(server: str, path: str, data: bytes | None = None, headers: dict | None = None) -> bytes:
    req = urllib.request.Request(server.rstrip("/") + path, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def upload(server: str, image: Path) -> str:
    boundary = uuid.uuid4().hex
    kind = mimetypes.guess_type(image.name)[0] or "application/octet-stream"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{image.name}\"\r\n"
            f"Content-Type: {kind}\r\n\r\n").encode() + image.read_bytes() + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n--{boundary}--\r\n").encode()
    answer = json.loads(_call(server, "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
    return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workflow", type=Path, help="API-format workflow JSON")
    p.add_argument("--server", default="http://127.0.0.1:8188")
    p.add_argument("--image", type=Path, help="upload this image and use it in every LoadImage node")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override a widget value (JSON, or a plain string)")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="folder for the output images")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    try:
        return run(args)
    except urllib.error.HTTPError as e:
        print(f"error: {e.url} refused ({e.code}): {e.read().decode(errors='replace')}", file=sys.stderr)
    except urllib.error.URLError as e:
        print(f"error: cannot reach the server {args.server}: {e.reason} (is it running? see --server)", file=sys.stderr)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
    except OSError as e:  # writing the outputs
        print(f"error: {e}", file=sys.stderr)
    return 2


class UsageError(Exception):
    """A wrong path or argument, said in one line."""


def _read_graph(path: Path) -> dict:
    try:
        graph = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read the workflow {path}: {e.strerror or e}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"the workflow {path} is not JSON: {e}") from e
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise UsageError(f"the workflow {path} is not in API format (File -> Export (API) in the editor)")
    return graph


def run(args: argparse.Namespace) -> int:
    graph = _read_graph(args.workflow)
    if args.image:
        if not args.image.is_file():
            raise UsageError(f"--image {args.image}: no such file")
        name = upload(args.server, args.image)
        for node in graph.values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = name
    for item in args.set:
        key, eq, value = item.partition("=")
        node_id, _, input_name = key.partition(".")
        if node_id not in graph or not input_name or not eq:
            raise UsageError(f"--set {item}: use NODE.INPUT=VALUE with a node id of the workflow "
                             f"({', '.join(graph)})")
        try:
            graph[node_id]["inputs"][input_name] = json.loads(value)
        except json.JSONDecodeError:
            graph[node_id]["inputs"][input_name] = value
    queued = json.loads(_call(args.server, "/prompt", json.dumps({"prompt": graph}).encode(),
                              {"Content-Type": "application/json"}))
    prompt_id = queued["prompt_id"]
    print(f"queued {prompt_id} as number {queued['number']}")
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        entry = json.loads(_call(args.server, f"/history/{prompt_id}")).get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.5)
    else:
        print("timed out", file=sys.stderr)
        return 1
    status = entry["status"]
    print(f"status: {status['status_str']}; events: {', '.join(m[0] for m in status['messages'])}")
    if status["status_str"] != "success":
        for event, data in status["messages"]:
            if event == "execution_error":
                print(f"{data['node_type']} (node {data['node_id']}): {data['exception_message']}", file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    for node_id, ui in entry["outputs"].items():
        for image in ui.get("images", []):
            query = urllib.parse.urlencode(image)
            data = _call(args.server, f"/view?{query}")
            (args.output / image["filename"]).write_bytes(data)
            where = "/".join(part for part in (image["type"], image["subfolder"], image["filename"]) if part)
            print(f"node {node_id}: {where} ({len(data)} bytes) -> {args.output / image['filename']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
