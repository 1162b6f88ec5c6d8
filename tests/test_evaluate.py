"""``ccc evaluate`` end to end on generated folders: the protocol crop, prediction folders,
a small model with classical and SAM harmonisation, skipped files, the written report."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ccc_nodes.core.metrics import ColorMetrics, metric_classes, mse
from ccc_nodes.core.settings import Harmonization
from ccc_nodes.interfaces.cli import main
from ccc_nodes.job import evaluate as E
from ccc_nodes.job.colorizer import Colorizer
from ccc_nodes.job.evaluate import eval_crop, evaluate_folder
from ccc_nodes.steps.masks import grey_image


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gt")
    (d / "sub").mkdir()
    Image.fromarray(data.chelsea()).save(d / "cat.png")  # 451x300
    Image.fromarray(data.coffee()[::2, ::2]).save(d / "sub" / "coffee.png")  # 300x200
    Image.fromarray(data.astronaut()[::2, ::2]).save(d / "astronaut.png")  # 256x256
    (d / "broken.jpg").write_bytes(b"not an image")
    return d


def test_eval_crop_is_shorter_side_then_centre_square():
    img = np.zeros((300, 450, 3), dtype=np.uint8)
    img[:, 150:300] = 255  # a white centre third
    x = eval_crop(img, 256)
    assert x.shape == (3, 256, 256)
    # The 450-wide image is scaled to 384 wide: its white third (128 px) sits in the centre of the crop.
    row = x[0, 128]
    assert row[:60].max() < 0.05 and row[70:186].min() > 0.95 and row[196:].max() < 0.05


@pytest.mark.slow
def test_prediction_folder_scores_matching_files_and_lists_the_rest(gt_dir, tmp_path):
    pred = tmp_path / "pred"
    (pred / "sub").mkdir(parents=True)
    Image.open(gt_dir / "cat.png").save(pred / "cat.png")  # identical
    dark = (np.asarray(Image.open(gt_dir / "sub" / "coffee.png")) * 0.5).astype(np.uint8)
    Image.fromarray(dark).save(pred / "sub" / "coffee.png")  # same stem and sub-folder
    res = evaluate_folder(gt_dir, pred, lpips=False, fid=False, progress=False)
    row = res.rows["prediction"]
    assert row["images"] == 2
    expect = mse(eval_crop(dark)[None], eval_crop(gt_dir / "sub" / "coffee.png")[None]).item() / 2
    assert row["mse"] == pytest.approx(expect, rel=1e-5)
    skipped = dict(res.skipped)
    assert "no prediction" in skipped[str(gt_dir / "astronaut.png")]
    assert skipped[str(gt_dir / "broken.jpg")] == "not an image file PIL can read"  # not "no prediction"
    assert res.notes["lpips"].startswith("not computed")


@pytest.mark.slow
def test_cli_with_a_model_and_classical_harmonisation(gt_dir, tmp_path, small_model, monkeypatch):
    model_dir = tmp_path / "model"
    small_model.save_pretrained(model_dir)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no LPIPS weights there
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).save(
        str(tmp_path / "feat.pt")
    )
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt_dir), "--model", str(model_dir), "--harmonize", "classical",
               "--size", "64", "--out", str(out), "--fid-weights", str(tmp_path / "feat.pt"), "-q", "--gallery", "2"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["CCC++", "CCC++ + harmonisation (classical)"]
    for row in rows.values():
        assert row["images"] == 3
        for k in ("mse", "psnr", "ssim", "uiqi", "cnr", "ccar", "tar", "cf", "delta_cf", "fid"):
            assert isinstance(row[k], float), k
        assert "lpips" not in row
    assert "alexnet-owt-7be5be79.pth" in report["notes"]["lpips"]
    assert "classical:felzenszwalb" in report["notes"]["harmonisation"]
    assert report["skipped"] == [{"file": str(gt_dir / "broken.jpg"), "why": "not an image file PIL can read"}]
    md = (out / "metrics.md").read_text()
    assert "| CCC++ + harmonisation (classical) |" in md and "n/a" in md and "broken.jpg" in md
    gallery = Image.open(out / "gallery.png")
    assert gallery.size == (5 * 128, 18 + 2 * 128)  # grey, masks, CCC++, harmonised, ground truth


@pytest.mark.slow
def test_sam_harmonisation_row_with_a_small_sam(gt_dir, small_model):
    from helpers import tiny_sam

    res = evaluate_folder(
        gt_dir, colorizer=Colorizer(small_model, device="cpu", size=64), sam=tiny_sam(),
        harmonization=Harmonization("sam", points_per_side=4,
                                    sam_options={"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}),
        lpips=False, fid=False, gallery=0, limit=3, progress=False,  # the first 3 files hold a broken one
    )
    assert list(res.rows) == ["CCC++", "CCC++ + harmonisation (sam)"]
    assert "sam:custom" in res.notes["harmonisation"] and res.gallery is None
    assert res.rows["CCC++ + harmonisation (sam)"]["images"] == 2


def test_bad_arguments_are_refused(gt_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--gt", str(gt_dir), "--pred", str(gt_dir), "--model", "x"])
    assert main(["evaluate", "--gt", str(gt_dir), "--pred", str(gt_dir), "--harmonize", "classical",
                 "--out", str(tmp_path / "o")]) == 2
    assert "use --model" in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(tmp_path / "none"), "--pred", str(gt_dir), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", "--gt", str(gt_dir), "--model", str(tmp_path / "nomodel"), "--out", str(tmp_path / "o")]) == 2


# ---------------------------------------------------------------- degenerate ground truths
@pytest.mark.slow
def test_grey_and_tiny_ground_truths_are_skipped_not_scored(tmp_path, capsys):
    """camera (grey) scored CNR 37 alone and a flat 1x1 image 10: neither is scored now."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    rng = np.random.default_rng(0)
    photos = {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()[::2, ::2]}
    for name, im in photos.items():
        Image.fromarray(im).save(gt / f"{name}.png")
        noisy = np.clip(im.astype(int) + rng.integers(-40, 41, im.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(pred / f"{name}.png")
    cam = np.repeat(data.camera()[..., None], 3, axis=2)
    cam[::7, ::5, 0] = np.minimum(cam[::7, ::5, 0].astype(int) + 2, 255)  # within training's 3 levels: still grey
    Image.fromarray(cam).save(gt / "camera.png")  # an RGB file holding a grey photo
    Image.fromarray(np.clip(cam.astype(int) + rng.integers(-40, 41, cam.shape), 0, 255).astype(np.uint8)).save(pred / "camera.png")
    Image.fromarray(np.array([[[200, 30, 40]]], np.uint8)).save(gt / "dot.png")  # 1x1
    Image.fromarray(np.array([[[10, 200, 40]]], np.uint8)).save(pred / "dot.png")
    Image.fromarray(data.coffee()[:20, :300]).save(gt / "strip.png")  # 300x20
    Image.fromarray(data.coffee()[:20, :300]).save(pred / "strip.png")
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(out), "--no-perceptual", "-q"])
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())
    row = report["rows"]["prediction"]
    assert row["images"] == 3
    # The colour photos alone, measured directly: the grey and tiny ones left no trace.
    m = ColorMetrics(metric_classes()[0])
    for name in photos:
        m.update(eval_crop(pred / f"{name}.png")[None], eval_crop(gt / f"{name}.png")[None])
    assert row["cnr"] == pytest.approx(m.compute()["cnr"], rel=1e-6)
    assert row["cnr"] < 3
    why = {s["file"]: s["why"] for s in report["skipped"]}
    assert why[str(gt / "camera.png")].startswith("grey ground truth")
    assert "too small" in why[str(gt / "dot.png")] and "1x1" in why[str(gt / "dot.png")]
    assert "300x20" in why[str(gt / "strip.png")]
    assert "camera.png" in report["notes"]["grey"] and report["notes"]["grey"].startswith("1 grey ground truth ")
    md = (out / "metrics.md").read_text()
    assert "camera.png: grey ground truth" in md and "dot.png: too small" in md


def test_grey_rule_is_trainings(tmp_path):
    x = torch.full((3, 8, 8), 0.5)
    assert E.is_grey(x)
    x[0, 3, 3] += 3 / 255
    assert E.is_grey(x)
    x[0, 3, 3] += 1 / 255  # 4 levels apart
    assert not E.is_grey(x)


def test_a_small_image_is_upscaled_and_said_so(tmp_path):
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(data.chelsea()[::4, ::4]).save(gt / "small.png")  # 113x75: over 32, under 256
    res = evaluate_folder(gt, colorizer=None, pred_dir=gt, lpips=False, fid=False, progress=False)
    assert res.rows["prediction"]["images"] == 1 and res.rows["prediction"]["mse"] == pytest.approx(0, abs=1e-12)
    assert res.notes["upscaled"].startswith("1 ground truth had a shorter side under 256 px")


# ---------------------------------------------------------------- arguments and failures
@pytest.mark.parametrize("crop", ["0", "-8", "30", "16"])
def test_bad_crop_is_refused_up_front(gt_dir, tmp_path, capsys, crop):
    rc = main(["evaluate", "--gt", str(gt_dir), "--pred", str(gt_dir), "--crop", crop, "--out", str(tmp_path / "o"),
               "--no-perceptual", "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--crop" in err and "multiple of 4" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="multiple of 4"):
        evaluate_folder(gt_dir, gt_dir, crop=int(crop), lpips=False, fid=False, progress=False)


def test_bad_network_size_names_the_option(gt_dir, tmp_path, capsys):
    assert main(["evaluate", "--gt", str(gt_dir), "--model", "default", "--size", "50", "--out", str(tmp_path / "o")]) == 2
    assert "--size must be a positive multiple of 32" in capsys.readouterr().err


def test_a_folder_of_unreadable_files_exits_1_with_the_reasons(tmp_path, capsys):
    gt = tmp_path / "gt"
    gt.mkdir()
    (gt / "a.png").write_bytes(b"not an image")
    (gt / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    for pred in (gt, tmp_path / "nopred"):  # pairs that cannot be read; no predictions at all
        pred.mkdir(exist_ok=True)
        rc = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "o"), "--no-perceptual", "-q"])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert "error: none of the 2 images" in err and "could be scored" in err
        assert f"skipped {gt / 'a.png'}: not an image file PIL can read" in err
        assert "no prediction" not in err  # unreadable ground truths are reported as unreadable
        report = json.loads((tmp_path / "o" / "metrics.json").read_text())
        assert report["rows"]["prediction"]["images"] == 0 and len(report["skipped"]) == 2


def test_unreadable_prediction_is_named(gt_dir, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "cat.png").write_bytes(b"junk")
    res = evaluate_folder(gt_dir, pred, lpips=False, fid=False, progress=False)
    assert dict(res.skipped)[str(gt_dir / "cat.png")] == f"prediction {pred / 'cat.png'}: not an image file PIL can read"


# ---------------------------------------------------------------- pairing with `ccc colorize` outputs
@pytest.mark.slow
def test_predictions_written_by_ccc_colorize_pair_up_gif_and_multi_dot_names(tmp_path, small_model, capsys):
    gt = tmp_path / "gt"
    (gt / "sub").mkdir(parents=True)
    frames = [Image.fromarray(np.roll(data.coffee()[::4, ::4], 20 * i, axis=1)) for i in range(3)]
    frames[0].save(gt / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)  # animated
    Image.fromarray(data.chelsea()[::2, ::2]).save(gt / "cat.v2.final.jpg")
    Image.fromarray(data.astronaut()[::4, ::4]).save(gt / "sub" / "astro.ppm")
    Image.fromarray(data.rocket()[::2, ::2]).save(gt / "rocket.png")
    model_dir = tmp_path / "model"
    small_model.save_pretrained(model_dir)
    pred = tmp_path / "pred"
    assert main(["colorize", str(gt), "-o", str(pred), "--model", str(model_dir), "--size", "64", "-q"]) == 0
    written = sorted(str(f.relative_to(pred)) for f in pred.rglob("*") if f.is_file())
    assert "anim.gif.png" in written  # what `ccc colorize` names a GIF's output
    capsys.readouterr()
    res = evaluate_folder(gt, pred, lpips=False, fid=False, progress=False)
    assert res.skipped == []
    assert res.rows["prediction"]["images"] == 4


def test_pairing_prefers_the_exact_name_then_the_png_form_then_the_stem(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for name in ("x.gif", "x.png", "y.gif", "z.tif"):
        (gt / name).touch()
    for name in ("x.png", "x.gif.png", "y.png", "z.jpg"):
        (pred / name).touch()
    pairs, missing = E._pairs(gt, pred)
    got = {g.name: p.name for g, p in pairs}
    assert got == {"x.gif": "x.gif.png", "x.png": "x.png", "y.gif": "y.png", "z.tif": "z.jpg"} and missing == []
    (pred / "x.gif.png").unlink()  # x.gif must not take x.png's colorization
    pairs, missing = E._pairs(gt, pred)
    assert {g.name: p.name for g, p in pairs}["x.png"] == "x.png" and [m[0] for m in missing] == [str(gt / "x.gif")]


# ---------------------------------------------------------------- one grey picture, no warnings
def test_gallery_grey_is_the_masks_grey_image(gt_dir, tmp_path):
    assert not hasattr(E, "to_grey")  # one grey-image function: masks.grey_image
    res = evaluate_folder(gt_dir, gt_dir, lpips=False, fid=False, progress=False, gallery=1)
    tile = np.asarray(res.gallery)[18:18 + 128, :128]
    crop = eval_crop(gt_dir / "astronaut.png")  # the first scored image (sorted)
    expect = np.asarray(Image.fromarray(grey_image(crop.permute(1, 2, 0).numpy(), None)).resize((128, 128), Image.BILINEAR))
    assert np.abs(tile.astype(int) - expect.astype(int)).max() <= 1


@pytest.mark.slow
def test_fid_network_loads_without_the_torchscript_deprecation_warning(gt_dir, tmp_path):
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).save(
        str(tmp_path / "feat.pt")
    )
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        res = evaluate_folder(gt_dir, gt_dir, lpips=False, fid=str(tmp_path / "feat.pt"), progress=False, gallery=0)
        assert [str(w.message) for w in seen if "torch.jit" in str(w.message)] == []
        warnings.warn("torch.jit.load is deprecated elsewhere", FutureWarning, stacklevel=1)  # not silenced globally
        assert any("elsewhere" in str(w.message) for w in seen)
    assert warnings.filters == before
    assert res.rows["prediction"]["fid"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_blocky_predictions_show_in_the_grid_ratio(gt_dir, tmp_path):
    import torch.nn.functional as F

    from ccc_nodes.core.color import lab_to_rgb, rgb_to_lab

    blocky, same = tmp_path / "blocky", tmp_path / "same"
    for d in (blocky, same, blocky / "sub", same / "sub"):
        d.mkdir(exist_ok=True)
    for rel in ("cat.png", "sub/coffee.png", "astronaut.png"):
        gt = eval_crop(gt_dir / rel)[None]  # 256 px, as ccc evaluate crops it
        lab = rgb_to_lab(gt)
        small = F.interpolate(lab[:, 1:], size=(7, 7), mode="area")  # a 224 px network's stride-32 cells
        ab = F.interpolate(F.interpolate(small, scale_factor=8, mode="nearest"), size=(256, 256), mode="bilinear")
        for folder, rgb in ((blocky, lab_to_rgb(torch.cat((lab[:, :1], ab), 1))), (same, gt)):
            arr = (rgb[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(folder / rel)
    rows = {}
    for folder in (blocky, same):
        res = evaluate_folder(gt_dir, folder, lpips=False, fid=False, progress=False, model_size=224)
        rows[folder.name] = res.rows["prediction"]
    assert rows["blocky"]["images"] == 3
    assert rows["blocky"]["grid"] > 1.5 and abs(rows["same"]["grid"] - 1) < 0.3
    assert rows["same"]["grid"] == pytest.approx(rows["same"]["grid_gt"], rel=0.02)
    paths = E.write_report(res, tmp_path / "report")
    head = paths["md"].read_text().splitlines()[0]
    assert "| grid |" in head and head.endswith("| washed % |")  # the grid ratio, then the wrong-colour columns
