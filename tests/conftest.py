"""Shared fixtures: small real models built in the test (no weights are downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccc_nodes.modeling import CCCNet

SMALL_ENCODER = "mobilenetv3_small_050"


def make_model(kept=None, bin_size=6, seed=0) -> CCCNet:
    torch.manual_seed(seed)
    return CCCNet(encoder=SMALL_ENCODER, decoder_channels=(32, 32, 32), bin_size=bin_size, kept=kept).eval()


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
