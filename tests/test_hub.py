"""The Hub code path, for real: huggingface_hub resolves a repo id from a populated local
cache with HF_HUB_OFFLINE=1 (nothing is mocked; nothing reaches the network)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ccc_nodes import ModelLoadError, load_model

REPO = "ccc-test/tiny-ccc"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_cache(cache: Path, model_dir: Path, repo: str = REPO, commit: str = COMMIT) -> Path:
    """Lay out a model folder the way huggingface_hub's cache stores a download."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, f in enumerate(sorted(p for p in model_dir.iterdir() if p.is_file())):
        blob = root / "blobs" / f"{i:040x}"
        shutil.copy(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return snap


@pytest.fixture()
def hub_cache(tmp_path, small_model):
    model_dir = tmp_path / "saved"
    small_model.save_pretrained(model_dir)
    cache = tmp_path / "hub"
    populate_cache(cache, model_dir)
    return cache


def _offline_load(cache: Path, source: str, revision: str | None = None) -> subprocess.CompletedProcess:
    code = (
        "import sys; from ccc_nodes import load_model, ModelLoadError\n"
        "try:\n"
        f"    m = load_model({source!r}, revision={revision!r})\n"
        "    print('K', m.num_classes)\n"
        "except ModelLoadError as e:\n"
        "    print('ERROR', e); sys.exit(3)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf_home")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_repo_id_loads_from_local_cache_offline(hub_cache, small_model):
    r = _offline_load(hub_cache, REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"K {small_model.num_classes}" in r.stdout


def test_revision_by_commit_hash(hub_cache):
    r = _offline_load(hub_cache, REPO, revision=COMMIT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_missing_repo_offline_gives_clear_error(hub_cache):
    r = _offline_load(hub_cache, "ccc-test/not-cached")
    assert r.returncode == 3
    msg = r.stdout
    assert "ccc-test/not-cached" in msg and "model.safetensors" in msg
    assert "hf download" in msg and "HF_HUB_OFFLINE=1" in msg


def test_cache_dir_argument_with_local_files_only(hub_cache, small_model):
    model = load_model(REPO, cache_dir=hub_cache, local_files_only=True)
    assert model.classes == small_model.classes
    assert not model.training


def test_a_mistyped_local_folder_is_not_taken_for_a_hub_repo(tmp_path, monkeypatch):
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # were the Hub asked, this would fail differently
    with pytest.raises(ModelLoadError, match=r"'runs/minee' does not exist; did you mean 'runs/mine'\?.*local folder"):
        load_model("runs/minee")


def test_local_folder_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"lacks model\.safetensors"):
        load_model(tmp_path / "half")
    (tmp_path / "half" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_model(tmp_path / "half")
    (tmp_path / "half" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model(tmp_path / "half")


def test_weights_that_do_not_match_the_config(tmp_path, small_model):
    import json

    small_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["kept"] = config["kept"][:10]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a valid CCC"):
        load_model(tmp_path)


def run_with_unreachable_hub(cache: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh process whose Hub endpoint is a closed loopback port (no
    HF_HUB_OFFLINE: huggingface_hub believes it may go online), warnings logged to stderr."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = "import logging, sys; logging.basicConfig(level=logging.WARNING)\n" + code
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_CACHE": str(cache),
           "HF_HOME": str(cache.parent / "hf_home")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def _unreachable_load(cache: Path, source: str) -> subprocess.CompletedProcess:
    return run_with_unreachable_hub(cache, (
        "from ccc_nodes import load_model, ModelLoadError\n"
        "try:\n"
        f"    print('K', load_model({source!r}).num_classes)\n"
        "except ModelLoadError as e:\n"
        "    print('ERROR', e); sys.exit(3)\n"
    ))


def test_unreachable_hub_fails_at_once_with_the_clear_error(hub_cache):
    r = _unreachable_load(hub_cache, "ccc-test/not-cached")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Retrying" not in r.stderr and "Retry" not in r.stdout  # no back-off storm before the message
    msg = r.stdout
    assert "'ccc-test/not-cached'" in msg and "config.json" in msg and "model.safetensors" in msg
    assert "the Hub cannot be reached" in msg and "Connection refused" in msg
    assert "hf download ccc-test/not-cached" in msg and "pass its path instead of the repo id" in msg


def test_unreachable_hub_still_loads_a_cached_repo(hub_cache, small_model):
    r = _unreachable_load(hub_cache, REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"K {small_model.num_classes}" in r.stdout and "Retrying" not in r.stderr


class FakeHub:
    """A Hub on loopback that serves one model folder as ``repo`` at one commit: the two
    requests huggingface_hub makes for a file (HEAD for its metadata, GET for its bytes).
    Real HTTP, real huggingface_hub client code; ``requests`` counts what was asked."""

    def __init__(self, folder: Path, repo: str = REPO, commit: str = COMMIT):
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        files = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                prefix = f"/{repo}/resolve/"
                name = self.path.split("?")[0].removeprefix(prefix).split("/", 1)[-1]
                if not self.path.startswith(prefix) or name not in files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = files[name]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):  # noqa: N802 - http.server's names
                self._answer(False)

            def do_GET(self):  # noqa: N802
                self._answer(True)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_hub(tmp_path, small_model):
    saved = tmp_path / "upload"
    small_model.save_pretrained(saved)
    hub = FakeHub(saved)
    yield hub
    hub.close()


def _load_in(env_extra: dict, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_a_hub_model_can_land_in_a_model_folder(fake_hub, tmp_path, small_model):
    """local_dir: the files go to a folder the user sees (ComfyUI's models/ccc/owner--name), not the
    Hugging Face cache; without network that folder is used."""
    folder = tmp_path / "models" / "ccc" / REPO.replace("/", "--")
    code = (f"from ccc_nodes import load_model\nm = load_model({REPO!r}, local_dir={str(folder)!r})\n"
            "print('K', m.num_classes)")
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "home")}
    r = _load_in(env, code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"K {small_model.num_classes}" in r.stdout
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list((tmp_path / "cache").glob("models--*"))  # nothing in the Hugging Face cache
    assert any(q.startswith("GET ") for q in fake_hub.requests)
    # Now the Hub cannot be reached: the folder's files are used, at once
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = _load_in({**env, "HF_ENDPOINT": closed}, "import logging; logging.basicConfig()\n" + code)
    assert r.returncode == 0 and f"K {small_model.num_classes}" in r.stdout, r.stdout + r.stderr
    assert "Retrying" not in r.stderr
