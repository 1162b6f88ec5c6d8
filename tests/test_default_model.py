"""The embedded default model: present, small enough, loads offline, colorizes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ccc_nodes import DEFAULT_MODEL_DIR, Colorizer, load_model
from ccc_nodes.core.metrics import colorfulness


def test_files_and_size():
    for name in ("config.json", "model.safetensors", "README.md"):
        assert (DEFAULT_MODEL_DIR / name).is_file()
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 50 * 2**20
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0") and "## Validation" in card


@pytest.fixture(scope="module")
def default_model():
    return load_model()


def test_config_holds_the_kept_classes(default_model):
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert len(config["kept"]) == default_model.num_classes == default_model.decoder.head.out_channels
    assert default_model.classes.bin_size == config["bin_size"] == 6
    assert next(default_model.parameters()).dtype == torch.float32


def test_colorizes_a_grey_photo(default_model, photo):
    grey = Image.fromarray(photo).convert("L")
    out = Colorizer(default_model, device="cpu")(grey)
    assert out.size == grey.size
    rgb = torch.from_numpy(np.array(out)).permute(2, 0, 1)[None].float() / 255
    assert colorfulness(rgb).item() > 5.0  # grey input has colourfulness 0: it added colour


@pytest.mark.slow
def test_reduced_precision_path_agrees_with_fp32(default_model, photo):
    fp32 = Colorizer(default_model, device="cpu", precision="fp32").predict(photo)[0]
    bf16 = Colorizer(default_model, device="cpu", precision="bf16").predict(photo)[0]
    assert bf16.logits.dtype == torch.float32  # autocast inside, float32 out
    assert (bf16.class_map == fp32.class_map).float().mean() > 0.8
