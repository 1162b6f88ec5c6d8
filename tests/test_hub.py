"""The Hub code path, for real: huggingface_hub resolves a repo id from a populated local
cache with HF_HUB_OFFLINE=1 (nothing is mocked; nothing reaches the network)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HUB_COMMIT, HUB_REPO, populate_cache, run_with_unreachable_hub

from ccc_nodes import ModelLoadError, load_model


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


@pytest.mark.slow
def test_repo_id_loads_from_local_cache_offline(hub_cache, small_model):
    r = _offline_load(hub_cache, HUB_REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"K {small_model.num_classes}" in r.stdout


@pytest.mark.slow
def test_revision_by_commit_hash(hub_cache):
    r = _offline_load(hub_cache, HUB_REPO, revision=HUB_COMMIT)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_missing_repo_offline_gives_clear_error(hub_cache):
    r = _offline_load(hub_cache, "ccc-test/not-cached")
    assert r.returncode == 3
    msg = r.stdout
    assert "ccc-test/not-cached" in msg and "model.safetensors" in msg
    assert "hf download" in msg and "HF_HUB_OFFLINE=1" in msg


def test_cache_dir_argument_with_local_files_only(hub_cache, small_model):
    model = load_model(HUB_REPO, cache_dir=hub_cache, local_files_only=True)
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


def _unreachable_load(cache: Path, source: str) -> subprocess.CompletedProcess:
    return run_with_unreachable_hub(cache, (
        "from ccc_nodes import load_model, ModelLoadError\n"
        "try:\n"
        f"    print('K', load_model({source!r}).num_classes)\n"
        "except ModelLoadError as e:\n"
        "    print('ERROR', e); sys.exit(3)\n"
    ))


@pytest.mark.slow
def test_unreachable_hub_fails_at_once_with_the_clear_error(hub_cache):
    r = _unreachable_load(hub_cache, "ccc-test/not-cached")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Retrying" not in r.stderr and "Retry" not in r.stdout  # no back-off storm before the message
    msg = r.stdout
    assert "'ccc-test/not-cached'" in msg and "config.json" in msg and "model.safetensors" in msg
    assert "the Hub cannot be reached" in msg and "Connection refused" in msg
    assert "hf download ccc-test/not-cached" in msg and "pass its path instead of the repo id" in msg


@pytest.mark.slow
def test_unreachable_hub_still_loads_a_cached_repo(hub_cache, small_model):
    r = _unreachable_load(hub_cache, HUB_REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"K {small_model.num_classes}" in r.stdout and "Retrying" not in r.stderr


def _load_in(env_extra: dict, code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_hub_model_can_land_in_a_model_folder(fake_hub, tmp_path, small_model):
    """local_dir: the files go to a folder the user sees (ComfyUI's models/ccc/owner--name), not the
    Hugging Face cache; without network that folder is used."""
    folder = tmp_path / "models" / "ccc" / HUB_REPO.replace("/", "--")
    code = (f"from ccc_nodes import load_model\nm = load_model({HUB_REPO!r}, local_dir={str(folder)!r})\n"
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
