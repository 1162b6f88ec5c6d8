"""Hub failures become the same one-line errors for CCC++ models and SAM checkpoints
(``ccc_nodes.core.hub.hub_error``): real huggingface_hub client code against a Hub on loopback
that answers each case the way huggingface.co does (status and ``X-Error-Code``)."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers import need

pytestmark = pytest.mark.slow  # one fresh process loading torch and segment-anything (about 30 s)

# repo -> (HTTP status, X-Error-Code) of every file request; other repos exist and have no
# such revision ("nope") or no such file
ANSWERS = {"ccc-test/missing": (404, "RepoNotFound"), "ccc-test/gated": (403, "GatedRepo")}


class ErrorHandler(BaseHTTPRequestHandler):
    """Answers every file request with the error of its repo (``ANSWERS``), revision or file."""

    def _answer(self) -> None:
        owner, name, _, revision, *_ = self.path.lstrip("/").split("/") + [""] * 4
        status, code = ANSWERS.get(f"{owner}/{name}", (404, "RevisionNotFound" if revision == "nope" else "EntryNotFound"))
        body = json.dumps({"error": code}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_HEAD = do_GET = _answer  # noqa: N815 - http.server's names

    def log_message(self, *args):
        pass


CASES = [  # (case, repo, revision, SAM filename)
    ("not found", "ccc-test/missing", None, None),
    ("gated", "ccc-test/gated", None, None),
    ("revision", "ccc-test/tiny", "nope", None),
    ("no file", "ccc-test/tiny", None, "absent.pth"),
]

SCRIPT = """
import json, sys
from ccc_nodes import ModelLoadError, load_model
from ccc_nodes.steps.masks import SamLoadError, load_sam
for case, repo, revision, filename in json.loads(sys.argv[1]):
    for kind, load in (("model", lambda: load_model(repo, revision=revision)),
                       ("sam", lambda: load_sam(repo, filename=filename, revision=revision))):
        try:
            load()
            print(json.dumps([case, kind, "loaded", ""]))
        except (ModelLoadError, SamLoadError) as e:
            print(json.dumps([case, kind, type(e).__name__, str(e)]))
"""


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    need("segment_anything")
    hub = ThreadingHTTPServer(("127.0.0.1", 0), ErrorHandler)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    home = tmp_path_factory.mktemp("hf")
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}", "HF_HUB_CACHE": str(home / "cache"), "HF_HOME": str(home),
           "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_TOKEN", None)
    try:
        r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env, capture_output=True,
                           text=True, timeout=300)
    finally:
        hub.shutdown()
        hub.server_close()
    assert r.returncode == 0, r.stdout + r.stderr
    return {(case, kind): (error, msg) for case, kind, error, msg in map(json.loads, r.stdout.splitlines())}


@pytest.mark.parametrize("kind, error", [("model", "ModelLoadError"), ("sam", "SamLoadError")])
def test_each_hub_failure_is_one_line_of_the_loaders_error(messages, kind, error):
    for case, *_ in CASES:
        got, msg = messages[(case, kind)]
        assert got == error, (case, got, msg)
        assert "\n" not in msg and "Traceback" not in msg and len(msg) < 600, (case, msg)


@pytest.mark.parametrize("kind", ["model", "sam"])
def test_hub_failures_say_which_case_it_is(messages, kind):
    def msg(case):
        return messages[(case, kind)][1]

    assert msg("not found").startswith("Hub repo 'ccc-test/missing' was not found (or is private: pass a token)")
    assert msg("gated").startswith("Hub repo 'ccc-test/gated' is gated: accept its conditions at "
                                   "https://huggingface.co/ccc-test/gated and pass a token")
    assert msg("revision") == "revision 'nope' of Hub repo 'ccc-test/tiny' does not exist"
    assert msg("no file").startswith("Hub repo 'ccc-test/tiny' has no ")
    for case in ("not found", "gated", "no file"):  # where the files are, there is a way to place them by hand
        assert "To place it by hand" in msg(case) and "instead of the repo id" in msg(case)


def test_a_missing_file_names_the_file_and_what_it_suggests(messages):
    assert messages[("no file", "model")][1].startswith(
        "Hub repo 'ccc-test/tiny' has no config.json, model.safetensors: is it a CCC++ model? To place it by hand")
    assert messages[("no file", "sam")][1].startswith(
        "Hub repo 'ccc-test/tiny' has no absent.pth: pass filename=. To place it by hand: download absent.pth")
