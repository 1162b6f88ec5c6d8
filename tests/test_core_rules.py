"""Rules written once in the core and read by every interface: "is this photo grey"
(ccc_nodes.core.images.is_grey), the evaluation crop (ccc_nodes.core.images.eval_crop), a*b*
area-averaged to the network's output and encoded (ccc_nodes.core.classes), and the treatment
of a grey reference (ccc_nodes.core.metrics.score_each, ccc evaluate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import load_app, need
from PIL import Image

from ccc_nodes import ColorClasses
from ccc_nodes.core import images, metrics
from ccc_nodes.core.classes import OUTPUT_SCALE, ab_at_output, classes_at_output
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.images import GREY_TOLERANCE, ImageError, eval_crop, is_grey
from ccc_nodes.job import evaluate as E


def _old_is_grey(x: torch.Tensor, tol: int = 3) -> bool:
    """The rule as metrics.py and training/data.py each wrote it before."""
    q = torch.round(x.clamp(0, 1) * 255).to(torch.int16)
    return bool((q[0] - q[1]).abs().max() <= tol and (q[1] - q[2]).abs().max() <= tol)


# ---------------------------------------------------------------- is_grey
def test_is_grey_reads_every_form_alike_and_as_before():
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        base = np.repeat(rng.random((h, w, 1)), 3, axis=2)
        noise = rng.integers(-5, 6, (h, w, 3)) / 255 * (rng.random((h, w, 3)) < rng.random() * 0.05)
        x = np.clip(base + noise, 0, 1).astype(np.float32)
        t = torch.from_numpy(x).permute(2, 0, 1)
        u = np.round(x * 255).astype(np.uint8)
        expect = _old_is_grey(t)
        assert is_grey(x) == is_grey(t) == is_grey(u) == is_grey(x.astype(np.float64)) == expect, trial
        assert is_grey(t.half()) == expect


def test_is_grey_tolerance_is_three_levels():
    assert GREY_TOLERANCE == 3
    x = np.full((8, 8, 3), 128, np.uint8)
    assert is_grey(x)
    x[3, 3, 0] += 3
    assert is_grey(x)
    x[3, 3, 0] += 1  # 4 levels apart
    assert not is_grey(x)
    x[3, 3, 0] = 128
    x[7, 7, 2] = 124  # G - B, on the last row
    assert not is_grey(x)


def test_is_grey_looks_at_every_slice_of_a_large_photo(monkeypatch):
    monkeypatch.setattr(images, "_GREY_ROWS", 64)  # slices of one row of 64 pixels
    x = np.full((50, 64, 3), 0.5, np.float32)
    assert is_grey(x)
    x[-1, -1] = (0.5, 0.5, 0.9)  # colour in the last pixel only
    assert not is_grey(x)


def test_is_grey_refuses_what_is_not_an_rgb_image():
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), torch.zeros(4, 4, 3)):
        with pytest.raises(ImageError, match="RGB"):
            is_grey(bad)
    with pytest.raises(ImageError, match="uint8 or float"):
        is_grey(np.zeros((4, 4, 3), np.int32))


def test_every_interface_reads_the_one_grey_rule():
    import training.data as D

    assert metrics.is_grey is is_grey and E.is_grey is is_grey and D.is_grey is is_grey
    assert not hasattr(D, "_is_grey")
    assert str(GREY_TOLERANCE) in metrics.GREY_RULE


def test_training_skips_a_grey_rgb_file_by_the_rule(tmp_path):
    import io

    from training.data import GREY, OK, decode

    x = np.repeat(np.linspace(0, 255, 64 * 64).reshape(64, 64, 1), 3, axis=2).astype(np.uint8)
    x[::5, ::3, 0] = np.minimum(x[::5, ::3, 0].astype(int) + 3, 255).astype(np.uint8)  # within 3 levels
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "PNG")
    assert decode(buf.getvalue(), 32)[1] == GREY
    x[10, 10] = (200, 40, 40)  # one red pixel: colour (it survives the resize to 64 -> 64)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "PNG")
    assert decode(buf.getvalue(), 64)[1] == OK


def _space():
    need("gradio")
    return load_app()


def test_the_space_keeps_a_reference_by_the_one_rule(tmp_path):
    app = _space()
    assert app.eval_crop is eval_crop and app.is_grey is is_grey
    grey = np.repeat(np.linspace(0, 255, 48 * 64).reshape(48, 64, 1), 3, axis=2).astype(np.uint8)
    grey[::4, ::4, 2] = np.minimum(grey[::4, ::4, 2].astype(int) + 3, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    assert app.read_photo(str(tmp_path / "grey.png"))[1] is None  # an RGB file of a grey photo: no reference
    spot = grey.copy()
    spot[20:24, 30:34] = (220, 30, 30)  # a small red spot: the photo has colour (the old mean spread said grey)
    Image.fromarray(spot).save(tmp_path / "spot.png")
    _, reference, _, _ = app.read_photo(str(tmp_path / "spot.png"))
    assert reference is not None and not is_grey(reference)


# ---------------------------------------------------------------- the evaluation crop
def test_eval_crop_has_one_home():
    assert E.eval_crop is eval_crop
    assert images.EVAL_SIZE == 256 and eval_crop(np.zeros((300, 500, 3), np.uint8)).shape == (3, 256, 256)


# ---------------------------------------------------------------- a*b* at the network's output
def test_ab_at_output_is_the_area_average_and_every_caller_uses_it():
    from training.data import class_histogram, lab_targets

    rgb = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(rgb)
    assert OUTPUT_SCALE == 4
    assert torch.equal(ab_at_output(lab), F.avg_pool2d(lab[:, 1:], 4))
    assert torch.equal(ab_at_output(lab, 1), lab[:, 1:])
    classes = ColorClasses(10, kept=range(0, 484, 3))
    want = classes.encode(F.avg_pool2d(lab[:, 1:], 4))
    assert torch.equal(classes_at_output(lab, classes), want)
    assert torch.equal(metrics.class_map(rgb, classes), want)
    L, target = lab_targets(rgb, classes)
    assert torch.equal(target, want) and torch.equal(L, lab[:, :1])
    u8 = (torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 255).round().to(torch.uint8)
    x = F.interpolate(u8.float() / 255, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    expect = ColorClasses(10).histogram(F.avg_pool2d(rgb_to_lab(x)[:, 1:], 4))
    assert torch.equal(class_histogram(u8, 10, size=32), expect)


# ---------------------------------------------------------------- a grey reference
def test_score_each_leaves_a_grey_reference_out_of_the_set():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(3, 3, 32, 32, generator=g)
    gt[1] = gt[1].mean(0, keepdim=True)  # a grey reference
    pred = (gt + 0.1 * torch.rand(3, 3, 32, 32, generator=g)).clamp(0, 1)
    classes = ColorClasses(6)
    rows, total, grey = metrics.score_each(pred, gt, classes)
    assert grey == [1] and len(rows) == 3
    assert all(math.isnan(rows[1][k]) for k in metrics.GREY_REFERENCE_NA)
    assert rows[1]["mse"] > 0 and not math.isnan(rows[1]["psnr"])  # the pixel metrics still stand
    assert not math.isnan(rows[0]["cnr"]) and not math.isnan(rows[2]["tar"])
    colour = metrics.ColorMetrics(classes)
    colour.update(pred[[0, 2]], gt[[0, 2]])
    want = colour.compute()
    assert total["images"] == 2 and total["cnr"] == pytest.approx(want["cnr"]) and total["mse"] == pytest.approx(want["mse"])
    _, none, grey = metrics.score_each(pred[1:2], gt[1:2], classes)
    assert none is None and grey == [0]


# ---------------------------------------------------------------- metrics.py after its split
def test_metrics_re_exports_the_networks_and_the_table():
    from ccc_nodes.core import perceptual, report

    for module, names in ((perceptual, perceptual.__all__), (report, ("METRIC_NAMES", "markdown_table"))):
        for name in names:
            assert getattr(metrics, name) is getattr(module, name) and name in metrics.__all__, name
    assert all(hasattr(metrics, name) for name in metrics.__all__)
