"""ONNX: `ccc export-onnx`, onnxruntime against torch, and `ccc colorize --runtime onnx`.

The network exported is the embedded default model (trained weights, so the class
agreement on photos means something), through the real command, once per module; the
skip decoder is exported from a small model built here.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SMALL_ENCODER, need
from PIL import Image

from ccc_nodes.core.extras import install_command
from ccc_nodes.core.hub import ModelLoadError, load_model
from ccc_nodes.core.images import to_rgb
from ccc_nodes.core.modeling import CCCNet
from ccc_nodes.core.onnx_runtime import OPSET, RUNTIMES, ExportError, OnnxModel, export_onnx, open_model
from ccc_nodes.core.prediction import decode_ab, lightness
from ccc_nodes.interfaces.cli import main
from ccc_nodes.job.colorizer import Colorizer

onnx = need("onnx", "pip install -e '.[onnx]'")
need("onnxscript", "pip install -e '.[onnx]'")
need("onnxruntime", "pip install -e '.[onnx]'")

slow = pytest.mark.slow  # an export takes tens of seconds on 2 cores


def _photos() -> list[np.ndarray]:
    from skimage import data

    grey = [data.camera(), data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    return [np.stack([im] * 3, -1) if im.ndim == 2 else im for im in grey]


@pytest.fixture(scope="module")
def torch_model():
    return load_model(None)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``ccc export-onnx default OUT.onnx``, as a user runs it."""
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    assert main(["export-onnx", "default", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def photo_L():
    """L ``(1, 1, H, W)`` of each photo, at its own size."""
    return [lightness(to_rgb(im)[0]) for im in _photos()]


@slow
def test_export_is_one_file_with_dynamic_shapes_and_the_colour_classes(exported, torch_model):
    assert sorted(p.name for p in exported.parent.iterdir()) == [exported.name]  # no external data, no .part
    proto = onnx.load(str(exported))
    onnx.checker.check_model(proto)
    assert [(o.domain, o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [("", OPSET)]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*proto.graph.input,
                                                                                       *proto.graph.output)]
    assert dims == [["batch", 1, "height", "width"], ["batch", torch_model.classes.K, "height/4", "width/4"]]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["ccc.classes"]) == torch_model.classes.to_config()
    assert json.loads(meta["ccc.config"])["encoder"] == torch_model.encoder_name
    assert np.allclose(json.loads(meta["ccc.centers"]), torch_model.classes.centers.numpy())


@slow
@pytest.mark.parametrize(("batch", "size"), [(6, (224, 224)), (3, (256, 384)), (2, (160, 96)), (1, (512, 512))])
def test_onnxruntime_matches_torch_on_photos(exported, torch_model, photo_L, batch, size):
    runtime = OnnxModel(exported)
    L = torch.cat([F.interpolate(x, size=size, mode="bilinear", antialias=True) for x in photo_L[:batch]])
    with torch.inference_mode():
        want = torch_model(L)
    got = runtime(L)
    assert got.shape == want.shape == (batch, torch_model.classes.K, size[0] // 4, size[1] // 4)
    agreement = float((got.argmax(1) == want.argmax(1)).float().mean())
    assert agreement >= 0.995, f"classes agree on {agreement:.4%} of the pixels"
    assert torch.allclose(got, want, atol=1e-3 * float(want.abs().max()), rtol=1e-3)


@slow
def test_the_metadata_alone_decodes_the_logits(exported, torch_model, photo_L):
    """Another runtime needs no Python model: ``ccc.centers[argmax logits]`` is the argmax a*b*."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    centers = np.array(json.loads(session.get_modelmeta().custom_metadata_map["ccc.centers"]), np.float32)
    L = F.interpolate(photo_L[2], size=(224, 224), mode="bilinear", antialias=True)
    (logits,) = session.run(["logits"], {"L": L.numpy()})
    ab = np.moveaxis(centers[logits.argmax(1)], -1, 1)  # (1, 2, 56, 56)
    assert np.array_equal(ab, decode_ab(torch.from_numpy(logits), torch_model.classes, "argmax").numpy())


@slow
def test_colorize_with_the_onnx_runtime_gives_torchs_pictures(exported, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i, im in enumerate(_photos()[:4]):
        Image.fromarray(im).convert("L").save(src / f"{i}.png")
    runs = {"torch": ["--model", "default"], "onnx": ["--model", str(exported), "--runtime", "onnx"],
            "onnx, hinted": ["--model", str(exported), "--hint", "40,40,#d03020"],
            "torch, hinted": ["--hint", "40,40,#d03020"]}
    for name, flags in runs.items():
        rc = main(["colorize", str(src), "-o", str(tmp_path / name), "--device", "cpu", "--batch", "3", "-q", *flags])
        assert rc == 0, capsys.readouterr().err
    for i in range(4):
        pics = {name: np.asarray(Image.open(tmp_path / name / f"{i}.png"), np.int16) for name in runs}
        for a, b in (("torch", "onnx"), ("torch, hinted", "onnx, hinted")):
            assert pics[a].shape == pics[b].shape and pics[a].ndim == 3
            diff = np.abs(pics[a] - pics[b])
            assert (diff == 0).mean() >= 0.99 and diff.max() <= 64, (i, a, b, diff.max())
        assert not np.array_equal(pics["onnx"], pics["onnx, hinted"])  # the hint went through the core's path


@slow
def test_the_colorizer_takes_an_onnx_file_and_refuses_half_precision(exported, photo_L):
    colorizer = Colorizer(str(exported), device="cpu")
    assert isinstance(colorizer.model, OnnxModel) and colorizer.classes == load_model(None).classes
    assert colorizer.logits(photo_L[0]).shape == (1, colorizer.classes.K, 56, 56)
    with pytest.raises(ValueError, match="fp32"):
        Colorizer(exported, device="cpu", precision="bf16")


@slow
def test_skip_decoder_exports_with_dynamic_sizes(tmp_path):
    """The skip decoder interpolates to each encoder map's size: the export's own check
    (a batch of 2 at 224, one at 96 x 160) fails if a size was frozen into the graph."""
    torch.manual_seed(0)
    model = CCCNet(encoder=SMALL_ENCODER, decoder_channels=(32, 32, 32), kept=list(range(200, 1100, 3)),
                   decoder="skip").eval()
    path = export_onnx(model, tmp_path / "skip.onnx")
    L = torch.rand(3, 1, 128, 192) * 100
    with torch.inference_mode():
        want = model(L)
    assert torch.allclose(OnnxModel(path)(L), want, atol=1e-4 * float(want.abs().max()), rtol=1e-3)


class _Drifting(CCCNet):
    """A network whose graph is not what torch runs: each call adds its call count, which
    the exporter freezes into the graph as a constant."""

    calls = 0

    def forward(self, L):
        self.calls += 1
        return super().forward(L) + self.calls


@slow
@pytest.mark.parametrize("case", ["opset the exporter lacks", "graph that differs from torch"])
def test_a_failed_export_leaves_the_old_file_and_no_part(tmp_path, small_model, case):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    if case == "opset the exporter lacks":  # torch's exporter would write opset 18 instead, with a warning
        with pytest.raises(ExportError, match="cannot write opset 1 "):
            export_onnx(small_model, out, opset=1)
    else:  # written whole, then refused by the check against torch
        torch.manual_seed(0)
        drifting = _Drifting(encoder=SMALL_ENCODER, decoder_channels=(32, 32, 32), kept=[600, 601, 602]).eval()
        with pytest.raises(ExportError, match="differ from torch's"):
            export_onnx(drifting, out)
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ------------------------------------------------------------------ errors (no export)
def test_runtime_and_model_must_agree(tmp_path, capsys):
    assert RUNTIMES == ("torch", "onnx")
    assert open_model("runs/model", None) == "runs/model"  # torch: the Colorizer loads it
    with pytest.raises(ModelLoadError, match=re.escape("ccc export-onnx default model.onnx")):
        open_model(None, "onnx")
    with pytest.raises(ModelLoadError, match="--runtime onnx"):
        open_model(tmp_path / "m.onnx", "torch")
    img = tmp_path / "grey.png"
    Image.new("L", (40, 30), 120).save(img)
    assert main(["colorize", str(img), "-o", str(tmp_path / "o"), "--runtime", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ccc export-onnx" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_bad_onnx_files_are_one_line(tmp_path, capsys):
    img = tmp_path / "grey.png"
    Image.new("L", (40, 30), 120).save(img)
    (tmp_path / "text.onnx").write_text("not a model")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "other", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), str(tmp_path / "other.onnx"))
    for name, words in (("text.onnx", "is not a readable ONNX model"), ("other.onnx", "no CCC++ colour classes"),
                        ("absent.onnx", "does not exist")):
        rc = main(["colorize", str(img), "-o", str(tmp_path / "o"), "--model", str(tmp_path / name)])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and err.count("\n") == 1, err


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    cases = [([str(tmp_path / "nosuch"), str(tmp_path / "a.onnx")], "does not exist"),
             (["default", str(tmp_path / "a.txt")], "must be a file name ending in .onnx"),
             (["default", str(tmp_path / "afile" / "a.onnx")], "is a file")]
    for argv, words in cases:
        assert main(["export-onnx", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the onnx extra were not installed
    assert main(["export-onnx", "default", str(tmp_path / "a.onnx")]) == 2
    assert capsys.readouterr().err == ("error: ccc export-onnx needs onnxscript, which is not installed: "
                                       f"{install_command('onnx')}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_onnx_runtime_without_onnxruntime_names_the_extra(tmp_path, capsys, monkeypatch):
    img = tmp_path / "grey.png"
    Image.new("L", (40, 30), 120).save(img)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["colorize", str(img), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == ("error: ccc colorize needs onnxruntime, which is not installed: "
                                       f"{install_command('onnx')}\n")


# ------------------------------------------------------------------ files that are not what they say (issue 21)
KEPT = [666, 667, 702]  # three classes: neutral and two near it (bin size 6)


def _network(path, *, batch="batch", size=("height", "width"), channels=3, declared=None, grab=None, meta=None):
    """A small network of the export's shape written with onnx's helper (no export, so no
    waiting): L (B, 1, H, W) -> 4x4 mean -> 1x1 convolution -> logits (B, channels, H/4, W/4).

    batch, size: the input's dimensions as the file declares them (an int fixes one).
    declared: the output's channel dimension as declared (default ``channels``); a name frees it,
      and the channels then pass a slice whose end is computed at run time, so that no
      shape inference finds their count before a run.
    grab: n -> the graph also makes (B - n) x 2**50 floats (4 PiB, more than any machine
      can give): with 1, a batch of one runs and any larger one fails for memory; with 0, every run.
    meta: the metadata (default: the three classes, as `ccc export-onnx` writes them)."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = size
    L = helper.make_tensor_value_info("L", TensorProto.FLOAT, [batch, 1, h, w])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, channels if declared is None else declared,
                                                                      "h4", "w4"])
    weight = np.linspace(-1, 1, channels, dtype=np.float32).reshape(channels, 1, 1, 1)
    inits = [numpy_helper.from_array(weight, "w")]
    nodes = [helper.make_node("AveragePool", ["L"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Conv", ["p", "w"], ["logits" if grab is None and not isinstance(declared, str) else "c"])]
    if isinstance(declared, str):  # channels = L's channels (1) x channels, known only when it runs
        inits += [numpy_helper.from_array(np.array(value, np.int64), name)
                  for name, value in (("one", [1]), ("two", [2]), ("times", [channels]), ("start", [0]))]
        nodes += [helper.make_node("Shape", ["L"], ["in_shape"]),
                  helper.make_node("Slice", ["in_shape", "one", "two"], ["in_channels"]),
                  helper.make_node("Mul", ["in_channels", "times"], ["end"]),
                  helper.make_node("Slice", ["c", "start", "end", "one"], ["logits" if grab is None else "c2"])]
    if grab is not None:
        for name, value in (("at0", [0]), ("at1", [1]), ("n", [grab]), ("huge", [2**50])):
            inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "nought"))
        nodes += [helper.make_node("Shape", ["L"], ["shape"]), helper.make_node("Slice", ["shape", "at0", "at1"], ["b"]),
                  helper.make_node("Sub", ["b", "n"], ["extra"]), helper.make_node("Mul", ["extra", "huge"], ["count"]),
                  helper.make_node("ConstantOfShape", ["count"], ["big"]),
                  helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
                  helper.make_node("Mul", ["total", "nought"], ["zero"]),
                  helper.make_node("Add", ["c2" if isinstance(declared, str) else "c", "zero"], ["logits"])]
    model = helper.make_model(helper.make_graph(nodes, "small", [L], [out], inits),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    for key, value in (meta if meta is not None else {"ccc.classes": json.dumps({"bin_size": 6, "kept": KEPT})}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def _greys(folder, n=3):
    folder.mkdir()
    for i in range(n):
        Image.fromarray((np.random.default_rng(i).random((48, 64)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _stderr_lines(capfd) -> list[str]:
    """What the run wrote to stderr, at the descriptor (onnxruntime's C++ log lines included)."""
    err = capfd.readouterr().err
    assert "Traceback" not in err and "[E:onnxruntime" not in err and "[W:onnxruntime" not in err, err
    return err.splitlines()


@pytest.mark.parametrize("case", ["a batch of 1 fixed in the graph", "a batch over 1 runs out of memory"])
def test_a_batch_onnxruntime_cannot_run_is_run_one_image_at_a_time(tmp_path, capfd, case):
    """Before, onnxruntime's own exception (not a RuntimeError) escaped every fallback: a
    37-line traceback and nothing written."""
    model = _network(tmp_path / "m.onnx", **({"batch": 1} if "fixed" in case else {"grab": 1}))
    src = _greys(tmp_path / "in")
    L = torch.rand(3, 1, 64, 96) * 100
    runtime = OnnxModel(model)
    assert torch.equal(runtime(L), torch.cat([runtime(L[i : i + 1]) for i in range(3)]))
    for batch in ("3", "1"):
        rc = main(["colorize", str(src), "-o", str(tmp_path / batch), "--model", str(model), "--batch", batch,
                   "--size", "64", "-q"])
        lines = _stderr_lines(capfd)
        assert rc == 0 and lines == [f"colorized 3 images into {tmp_path / batch}; 0 skipped"], lines
    for i in range(3):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "3" / f"{i}.png")),
                              np.asarray(Image.open(tmp_path / "1" / f"{i}.png")))


@pytest.mark.parametrize("case", ["memory", "input size"])
def test_an_image_onnxruntime_cannot_run_is_one_line_and_the_rest_goes_on(tmp_path, capfd, case):
    """Every run fails (out of memory, or an input size fixed in the graph): each image is one
    line of the summary, nothing is written, the run ends with exit 1 - no traceback."""
    model = _network(tmp_path / "m.onnx", **({"grab": 0} if case == "memory" else {"size": (96, 96)}))
    src = _greys(tmp_path / "in", 2)
    with pytest.raises(MemoryError if case == "memory" else RuntimeError, match="onnxruntime"):
        OnnxModel(model)(torch.zeros(2, 1, 64, 64))
    rc = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--model", str(model), "--batch", "2",
               "--size", "64", "-q"])
    lines = _stderr_lines(capfd)
    why = ("not enough memory" if case == "memory" else
           "colorization failed: onnxruntime could not run m.onnx on L (1, 1, 64, 64): Got invalid dimensions for "
           "input: L for the following indices index: 2 Got: 64 Expected: 96")
    assert rc == 1 and lines[0] == "colorized 0 images; 2 skipped", lines
    assert len(lines) == 3 and all(line.startswith(f"  skipped {src}/") and why in line for line in lines[1:]), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("channels", "declared"), [(5, None), (2, None), (5, "k")])
def test_logits_whose_channels_are_not_the_classes_are_refused(tmp_path, capfd, channels, declared):
    """More channels than classes was an IndexError traceback; fewer gave wrong colours and
    exit 0. Declared in the file: refused on loading (exit 2); found on running: every image skipped."""
    model = _network(tmp_path / "m.onnx", channels=channels, declared=declared)
    src = _greys(tmp_path / "in", 2)
    rc = main(["colorize", str(src), "-o", str(tmp_path / "out"), "--model", str(model), "--size", "64", "-q"])
    lines = _stderr_lines(capfd)
    words = f"gives {channels} channels of logits, but its metadata ccc.classes has 3 colour classes"
    if declared is None:
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    else:
        assert rc == 1 and len(lines) == 3 and all(words in line for line in lines[1:]), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("meta", "words"), [
    ({"ccc.classes": "{}"}, "ccc.classes must be {\"bin_size\": s, \"kept\": [q, ...]}"),
    ({"ccc.classes": "[1, 2]"}, "ccc.classes must be a JSON object, got '[1, 2]'"),
    ({"ccc.classes": "[" * 100_000 + "]" * 100_000}, "ccc.classes must be a JSON object"),
    ({"ccc.classes": "not json"}, "ccc.classes must be a JSON object"),
    ({"ccc.classes": json.dumps({"bin_size": 6, "kept": [[666]]})}, "with whole numbers"),
    ({"ccc.classes": json.dumps({"bin_size": 6, "kept": [-1]})}, "kept bins must lie in 0..1295"),
    ({"ccc.classes": json.dumps({"bin_size": 6, "kept": KEPT}), "ccc.config": "[1, 2]"},
     "ccc.config must be a JSON object"),
])
def test_metadata_that_is_not_colour_classes_is_one_line(tmp_path, capfd, meta, words):
    model = _network(tmp_path / "m.onnx", meta=meta)
    img = tmp_path / "grey.png"
    Image.new("L", (40, 30), 120).save(img)
    with pytest.raises(ModelLoadError, match=re.escape(words)):
        OnnxModel(model)
    assert main(["colorize", str(img), "-o", str(tmp_path / "out"), "--model", str(model)]) == 2
    lines = _stderr_lines(capfd)
    assert len(lines) == 1 and lines[0].startswith(f"error: {str(model)!r}: its metadata") and words in lines[0], lines
    assert not (tmp_path / "out").exists()


@slow
def test_the_export_is_written_through_a_new_file_never_a_planted_one(tmp_path, small_model):
    """The old fixed name ``.m.onnx.part`` was opened by name: a link planted there was
    written through (and then renamed over the output). Now images.part_file makes a new
    file under a random name, exclusively."""
    victim, planted = tmp_path / "victim.txt", tmp_path / ".m.onnx.part"
    victim.write_text("not yours")
    planted.symlink_to(victim)
    out = export_onnx(small_model, tmp_path / "m.onnx")
    assert victim.read_text() == "not yours" and planted.is_symlink()
    assert not out.is_symlink() and OnnxModel(out).classes == small_model.classes
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.onnx.part", "m.onnx", "victim.txt"]

