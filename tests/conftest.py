"""Shared fixtures: small real models built in the test (no weights are downloaded), and
the real parts the tests run against. Helper functions are in helpers.py."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from helpers import BROWSER_FLAGS, FakeHub, chromium, load_app, make_model, serve, space_model

from ccc_nodes.core.modeling import CCCNet

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the Space tests send nothing out


@pytest.fixture(scope="session")
def small_model() -> CCCNet:
    return make_model(kept=list(range(200, 1100, 3)))


@pytest.fixture(scope="session")
def neutral_model() -> CCCNet:
    """A model that always predicts the neutral class (a* = b* = 0): its output keeps L."""
    model = make_model(kept=[666, 667, 702])
    with torch.no_grad():
        model.decoder.head.weight.zero_()
        model.decoder.head.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    return model


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from skimage import data

    return data.chelsea()  # (300, 451, 3) uint8


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a loaded 2-core machine more threads only make each
    other wait (10x slower); put back afterwards. Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_model):
    """``small_model`` saved to a folder, as ``--model`` takes it."""
    d = tmp_path_factory.mktemp("model")
    small_model.save_pretrained(d)
    return d


@pytest.fixture()
def fake_hub(tmp_path, small_model):
    """A Hub on loopback serving ``small_model`` as helpers.HUB_REPO."""
    saved = tmp_path / "upload"
    small_model.save_pretrained(saved)
    hub = FakeHub(saved)
    yield hub
    hub.close()


# ------------------------------------------------------------------ the Space
@pytest.fixture(scope="module")
def app():
    """space/app.py, loaded as a module."""
    return load_app()


@pytest.fixture(scope="module")
def model(tmp_path_factory, app):
    """The model the Space serves (its environment variable set for the module)."""
    source = space_model(tmp_path_factory)
    os.environ[app.MODEL_ENV] = source
    yield source
    os.environ.pop(app.MODEL_ENV, None)


# ------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def client(server):
    """An HTTP client of the module's own ``server`` fixture (a ServerThread on loopback)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def space_page(tmp_path_factory):
    """The Space served on loopback with a small model: (its URL, the app module)."""
    app = load_app()
    os.environ[app.MODEL_ENV] = space_model(tmp_path_factory)
    demo, url = serve(app, os.environ[app.MODEL_ENV])
    yield url, app
    demo.close()
    os.environ.pop(app.MODEL_ENV, None)


@pytest.fixture(scope="session", name="chromium")
def chromium_path() -> str:
    """Debian's Chromium: skipped without it on a developer's machine, a failure in CI."""
    return chromium()


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Chromium driven by Playwright, one for a module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
        yield launched
        launched.close()


@pytest.fixture()
def no_network(monkeypatch):
    """Any name lookup or connection fails at once and is recorded: the list this yields
    stays empty for code that refuses its input before reaching for the network."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
