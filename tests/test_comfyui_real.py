"""The ComfyUI findings against a real ComfyUI: the pack loaded by ComfyUI's own loader, its
model folders, core ImageScale's bicubic output, ComfyUI's own validation and error
names, its model management unloading the pack's network, and a Hub model (from a Hub on
loopback) landing in ``models/ccc``. Needs a ComfyUI checkout with its own environment, so it runs only when
``CCC_COMFYUI_DIR`` names one (docs/COMFYUI.md: ComfyUI 0.3.64, its ``.venv``); skipped
otherwise. ``CCC_COMFYUI_PYTHON`` overrides the interpreter (default ``$CCC_COMFYUI_DIR/.venv/bin/python``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import HUB_REPO

ROOT = Path(__file__).resolve().parents[1]
COMFYUI = os.environ.get("CCC_COMFYUI_DIR")
pytestmark = [pytest.mark.skipif(not COMFYUI, reason="set CCC_COMFYUI_DIR to a ComfyUI checkout (docs/COMFYUI.md)"),
              pytest.mark.slow]

SCRIPT = r"""
import asyncio, json, os, sys
comfy, pack, tmp = sys.argv[1:4]
sys.argv = ["main.py", "--cpu"]  # ComfyUI parses its options at import
os.chdir(comfy); sys.path.insert(0, comfy)
import comfy.options
comfy.options.enable_args_parsing()  # as main.py does
import folder_paths
# As an extra_model_paths.yaml entry named ccc does, before custom nodes load:
folder_paths.add_model_folder_path("ccc", os.path.join(tmp, "elsewhere", "ccc"))
folder_paths.models_dir = os.path.join(tmp, "models")  # a fresh models/ folder: no models/ccc yet
folder_paths.set_input_directory(os.path.join(tmp, "input"))
import nodes, execution, torch
from PIL import Image
assert asyncio.run(nodes.load_custom_node(pack)), "the pack did not load"
N = nodes.NODE_CLASS_MAPPINGS
out = {"ccc_folders": folder_paths.get_folder_paths("ccc"), "sams_folders": folder_paths.get_folder_paths("sams"),
       "made": [os.path.isdir(os.path.join(tmp, "models", k)) for k in ("ccc", "sams")]}

# core ImageScale, bicubic, on hard edges: values outside 0..1 into CCC++ Colorize
grey = Image.open(os.path.join(pack, "examples", "grey", "chelsea.jpg")).convert("RGB")
x = (torch.from_numpy(__import__("numpy").asarray(grey)).float() > 110).float()[None]
(big,) = N["ImageScale"]().upscale(x, "bicubic", 640, 426, "disabled")
out["scaled_range"] = [float(big.min()), float(big.max())]
(model,) = N["CCCModelLoader"]().load("default", "cpu", "fp32")
(colour,) = N["CCCColorize"]().colorize(model, big, size=64)
out["colorized_range"] = [float(colour.min()), float(colour.max())]

# ComfyUI's model management holds the network while used, and lets it go on "Unload models" / POST /free
import comfy.model_management as mm
held = lambda: any(lm.model is not None and lm.model.model is model.model for lm in mm.current_loaded_models)
out["held_after_run"] = held()
mm.unload_all_models()  # what POST /free {"unload_models": true} runs
out["held_after_unload"] = held()
(again,) = N["CCCColorize"]().colorize(model, big, size=64)
out["rerun_equal"] = bool(torch.equal(again, colour)) and held()

# ComfyUI's own validation
grey.save(os.path.join(tmp, "input", "chelsea.jpg"))
def validate(prompt, node):
    return asyncio.run(execution.validate_inputs("p", prompt, node, {}))[:2]
sam = {"1": {"class_type": "CCCSAMLoader", "inputs": {"model_type": "vit_b", "device": "cpu",
                                                     "repo_or_path": "owner/sam"}}}  # no checkpoint: empty models/sams
out["sam_loader"] = validate(sam, "1")
sam["1"]["inputs"]["repo_or_path"] = ""  # nothing to load: refused once, not under each input
out["sam_none"] = validate(sam, "1")
graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "chelsea.jpg"}},
         "2": {"class_type": "CCCModelLoader", "inputs": {"model": "default", "device": "cpu", "precision": "fp32"}},
         "3": {"class_type": "CCCColorize", "inputs": {"ccc_model": ["2", 0], "image": ["1", 0], "decode": "argmax",
                                                       "temperature": 0.38, "size": 100}}}
out["size_100"] = validate(graph, "3")
graph["2"]["inputs"]["device"] = "cuda"
graph["3"]["inputs"]["size"] = 224
out["cuda"] = validate(graph, "2") if not torch.cuda.is_available() else None

# a Hub model loaded inside ComfyUI lands in models/ccc/<owner>--<name> and is listed next time
N["CCCModelLoader"]().load("default", "cpu", "fp32", repo_or_path=os.environ["CCC_TEST_REPO"])
out["hub_folder"] = sorted(os.listdir(os.path.join(tmp, "models", "ccc")))
out["listed"] = N["CCCModelLoader"].INPUT_TYPES()["required"]["model"][0]

# SAM in ComfyUI: a small SAM saved as a checkpoint in models/sams and loaded by the SAM Loader
# node (segment-anything's vit_b builder swapped for the small architecture; the file, its
# loading and ComfyUI's model management are real), then SAM Harmonize with it, before and
# after ComfyUI unloads every model
sys.path.insert(0, os.path.join(pack, "tests"))
import segment_anything
from tiny_models import tiny_sam
torch.save(tiny_sam(seed=2).state_dict(), os.path.join(tmp, "models", "sams", "tiny.pth"))
segment_anything.sam_model_registry["vit_b"] = lambda checkpoint=None: tiny_sam(seed=1)
out["sam_listed"] = N["CCCSAMLoader"].INPUT_TYPES()["optional"]["checkpoint"][0]
(sam_net,) = N["CCCSAMLoader"]().load("vit_b", "cpu", checkpoint="tiny.pth")
sam_held = lambda: any(getattr(lm.model.model, "net", None) is sam_net for lm in mm.current_loaded_models
                       if lm.model is not None)
out["sam_weights_loaded"] = bool(torch.equal(sam_net.state_dict()["mask_decoder.iou_token.weight"],
                                             tiny_sam(seed=2).state_dict()["mask_decoder.iou_token.weight"]))
(classes,) = N["CCCGrayscaleToClasses"]().predict(model, big, 64)
harmonized, shown = N["CCCSAMHarmonize"]().harmonize(classes, 0.002, 0.3, 12.0, 2.0, sam_model=sam_net,
                                                     points_per_side=4)
out["sam_harmonized"] = [list(shown.shape), len(harmonized.predictions), sam_held()]
mm.unload_all_models()
out["sam_after_unload"] = sam_held()
harmonized, shown = N["CCCSAMHarmonize"]().harmonize(classes, 0.002, 0.3, 12.0, 2.0, sam_model=sam_net,
                                                     points_per_side=4)
out["sam_rerun"] = [list(shown.shape), sam_held()]

# POST /free {"unload_models": true, "free_memory": true}: ComfyUI drops its node outputs and
# unloads every model; the pack's cache holds nothing then, and the process's memory falls by
# what the network took (a 90 MB one: the rule's reference model)
import gc, weakref, psutil
rss = lambda: (gc.collect(), psutil.Process().memory_info().rss)[1]
before = rss()
(big,) = N["CCCModelLoader"]().load("default", "cpu", "fp32", repo_or_path=os.environ["CCC_TEST_BIG"])
N["CCCColorize"]().colorize(big, x, size=64)  # handed to ComfyUI's model management
loaded, probe = rss(), weakref.ref(big.model)
size = sum(t.numel() * t.element_size() for t in big.model.state_dict().values())
del big
mm.unload_all_models()  # what /free's unload_models runs; free_memory resets the node outputs (here: del)
mm.soft_empty_cache()
out["free"] = [size, loaded - before, loaded - rss(), probe() is None]

# the name ComfyUI's error dialog shows for the pack's exceptions
try:
    N["CCCModelLoader"]().load("absent", "cpu", "fp32")
except Exception as e:
    out["error_type"] = execution.full_type_name(type(e))
print("RESULT " + json.dumps(out))
"""


def test_the_findings_in_real_comfyui(tmp_path, fake_hub):
    python = os.environ.get("CCC_COMFYUI_PYTHON") or str(Path(COMFYUI) / ".venv" / "bin" / "python")
    (tmp_path / "input").mkdir()
    from training.recipes.default_rule import reference_model

    big = reference_model(tmp_path / "big")  # 22.5M parameters, from the repository's history
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(tmp_path / "hf"), "CCC_TEST_REPO": HUB_REPO,
           "CCC_TEST_BIG": str(big)}
    env.pop("HF_HUB_OFFLINE", None)
    r = subprocess.run([python, "-c", SCRIPT, COMFYUI, str(ROOT), str(tmp_path)], capture_output=True, text=True,
                       timeout=600, env=env)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stdout[-2000:] + r.stderr[-4000:]
    out = json.loads(line.removeprefix("RESULT "))
    # models/ccc registered beside an extra_model_paths entry of the same name, and both folders made
    assert str(tmp_path / "models" / "ccc") in out["ccc_folders"] and len(out["ccc_folders"]) == 2
    assert str(tmp_path / "models" / "sams") in out["sams_folders"] and out["made"] == [True, True]
    # ImageScale bicubic leaves 0..1; the pack clamps instead of refusing
    lo, hi = out["scaled_range"]
    assert lo < -0.01 and hi > 1.01 and out["colorized_range"][0] >= 0 and out["colorized_range"][1] <= 1
    # a SAM Loader with no checkpoint (empty models/sams) and a repo_or_path validates
    assert out["sam_loader"] == [True, []], out["sam_loader"]
    ok, errors = out["sam_none"]
    assert not ok and len(errors) == 1 and "no SAM checkpoint chosen" in errors[0]["details"], errors
    # run-time failures refused at validation, with the run's message
    ok, errors = out["size_100"]
    assert not ok and "size must be a positive multiple of 32, got 100" in json.dumps(errors)
    if out["cuda"] is not None:
        ok, errors = out["cuda"]
        assert not ok and "torch sees no CUDA GPU" in json.dumps(errors)
    assert out["error_type"] == "ccc_nodes.core.hub.ModelLoadError"
    # the Hub model is in models/ccc, where the loader lists it
    folder = HUB_REPO.replace("/", "--")
    assert folder in out["hub_folder"] and folder in out["listed"]
    assert (tmp_path / "models" / "ccc" / folder / "model.safetensors").is_file() and not (tmp_path / "hf").exists()
    # the network is ComfyUI's to unload (and to load again)
    assert out["held_after_run"] and not out["held_after_unload"] and out["rerun_equal"]
    # SAM: listed from models/sams, loaded by the SAM Loader with the file's weights, run by SAM Harmonize
    # under ComfyUI's model management (Sam's read-only device property), unloaded and run again
    assert "tiny.pth" in out["sam_listed"] and out["sam_weights_loaded"]
    assert out["sam_harmonized"] == [[1, 426, 640, 3], 1, True], out["sam_harmonized"]
    assert out["sam_after_unload"] is False and out["sam_rerun"] == [[1, 426, 640, 3], True]
    # /free: nothing of the pack keeps the network alive, and its memory is returned
    size, grew, fell, gone = out["free"]  # (the allocator may reuse memory freed before: growth can be less than size)
    assert gone and size > 80e6 and grew > 0.3 * size and fell > 0.8 * grew, out["free"]
