"""ComfyUI's conventions, as the pack meets them in ComfyUI 0.3.64 (issue findings): IMAGE
values slightly outside 0..1 clamped, run-time failures refused at validation with the
run's own message, a SAM Loader that queues with an empty models/sams (progress per image:
test_nodes.py), an empty MASK reported, bf16 on the CPU warned about, and plain error type names.

The same checks against a real ComfyUI checkout are in test_comfyui_real.py."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ccc_nodes import Colorizer
from ccc_nodes.interfaces import nodes
from ccc_nodes.interfaces.server.graph import validate_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def colorizer(small_model):
    return Colorizer(small_model, device="cpu", size=64)


def bicubic_image(photo: np.ndarray, scale: float = 1.7) -> torch.Tensor:
    """What core ImageScale (bicubic) gives: an IMAGE that overshoots 0..1 near hard edges
    (the photo thresholded to black and white has many)."""
    x = torch.from_numpy(photo > 110).float().permute(2, 0, 1)[None]
    size = (int(x.shape[2] * scale), int(x.shape[3] * scale))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


@pytest.mark.slow
def test_image_values_slightly_outside_0_1_are_clamped_not_refused(colorizer, photo):
    image = bicubic_image(photo)
    assert image.min() < -0.05 and image.max() > 1.05  # really outside, as ComfyUI gives it
    (out,) = nodes.CCCColorize().colorize(colorizer, image, size=64)
    assert out.shape == image.shape and out.min() >= 0.0 and out.max() <= 1.0
    table = nodes.CCCMetrics().measure(out, image)["result"][0]
    assert "PSNR" in table


@pytest.mark.parametrize(("cls", "values", "run"), [
    (nodes.CCCColorize, {"size": 100}, lambda c, im: nodes.CCCColorize().colorize(c, im, size=100)),
    (nodes.CCCGrayscaleToClasses, {"size": 48}, lambda c, im: nodes.CCCGrayscaleToClasses().predict(c, im, size=48)),
    (nodes.CCCModelLoader, {"device": "cuda"}, lambda c, im: nodes.CCCModelLoader().load("default", "cuda", "fp32")),
])
def test_run_time_failures_are_refused_at_validation_with_the_same_message(colorizer, photo, cls, values, run):
    if "device" in values and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image = torch.from_numpy(photo[:64, :64]).float().div(255)[None]
    with pytest.raises(ValueError) as at_run:
        run(colorizer, image)
    assert cls.VALIDATE_INPUTS(**values) == str(at_run.value)
    assert cls.VALIDATE_INPUTS(**{k: ("cpu" if k == "device" else 224) for k in values}) is True


def test_validate_inputs_keeps_comfyuis_own_checks_for_the_inputs_it_takes():
    # ComfyUI skips min/max/list checks of inputs named in VALIDATE_INPUTS: the helper does them
    assert "outside 32..2048" in nodes.CCCColorize.VALIDATE_INPUTS(size=4096)
    assert "is not one of" in nodes.CCCModelLoader.VALIDATE_INPUTS(device="tpu")


def test_sam_loader_queues_with_an_empty_models_folder_and_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CCC_MODELS_DIR", str(tmp_path / "models"))  # models/sams does not even exist
    spec = nodes.CCCSAMLoader.INPUT_TYPES()
    assert spec["optional"]["checkpoint"][0] == []  # the empty list the editor leaves out of the prompt
    # As the editor sends it: no 'checkpoint' at all. ComfyUI passes VALIDATE_INPUTS only what is there.
    assert nodes.CCCSAMLoader.VALIDATE_INPUTS(repo_or_path="owner/sam") is True
    assert "no SAM checkpoint chosen" in nodes.CCCSAMLoader.VALIDATE_INPUTS()
    registry = {"CCCSAMLoader": nodes.CCCSAMLoader}

    class Sink:  # an output node reading the SAM model, so the loader is validated
        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return {"required": {"sam_model": ("SAM_MODEL",)}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

    registry["Sink"] = Sink
    loader = {"class_type": "CCCSAMLoader", "inputs": {"model_type": "vit_b", "device": "cpu", "repo_or_path": "owner/sam"}}
    prompt = {"1": loader, "9": {"class_type": "Sink", "inputs": {"sam_model": ["1", 0]}}}
    ok, error, _, node_errors = validate_prompt(copy.deepcopy(prompt), registry)
    assert ok, (error, node_errors)
    del prompt["1"]["inputs"]["repo_or_path"]
    ok, _, _, node_errors = validate_prompt(copy.deepcopy(prompt), registry)
    assert not ok and "no SAM checkpoint chosen" in str(node_errors["1"])


@pytest.mark.slow
def test_an_all_zero_mask_is_reported_in_the_node_output(colorizer, photo):
    image = torch.from_numpy(photo).float().div(255)[None]
    (classes,) = nodes.CCCGrayscaleToClasses().predict(colorizer, image, size=64)
    blank = torch.zeros(1, 64, 64)  # core LoadImage's mask for a JPEG
    out = nodes.CCCSAMHarmonize().harmonize(classes, 0.01, 0.5, 10.0, 1.0, mask=blank)
    assert isinstance(out, dict) and "empty (all zeros)" in out["ui"]["text"][0]
    assert isinstance(out["result"][0], nodes.ClassBatch)
    painted = blank.clone()
    painted[0, 10:40, 10:40] = 1
    assert isinstance(nodes.CCCSAMHarmonize().harmonize(classes, 0.01, 0.5, 10.0, 1.0, mask=painted), tuple)


def test_bf16_on_the_cpu_is_warned_about(small_model):
    with pytest.warns(UserWarning, match="bf16 on the CPU"):
        Colorizer(small_model, device="cpu", precision="bf16")


@pytest.mark.slow
def test_error_types_have_plain_module_names_when_loaded_as_a_pack(tmp_path):
    """ComfyUI names the pack's module after its path; its error dialog shows the exception's
    module and name. The core must not be a sub-module of that path-named module."""
    pack = tmp_path / "custom_nodes" / "ccc-nodes"
    pack.parent.mkdir()
    pack.symlink_to(ROOT, target_is_directory=True)
    code = f"""
import importlib.util, sys
path = {str(pack)!r}
spec = importlib.util.spec_from_file_location(path, path + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[path] = module
spec.loader.exec_module(module)
try:
    module.NODE_CLASS_MAPPINGS["CCCModelLoader"]().load("absent", "cpu", "fp32")
except Exception as e:
    print(type(e).__module__ + "." + type(e).__qualname__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ccc_nodes.core.hub.ModelLoadError"
