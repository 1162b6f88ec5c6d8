"""``ccc evaluate`` end to end on generated folders: the protocol crop, prediction folders,
a small model with classical and SAM harmonisation, skipped files, the written report."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ccc_nodes.cli import main
from ccc_nodes.evaluate import eval_crop, evaluate_folder
from ccc_nodes.metrics import mse
from ccc_nodes.pipeline import Colorizer


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
    assert "no prediction" in skipped[str(gt_dir / "broken.jpg")]
    assert res.notes["lpips"].startswith("not computed")


def test_cli_with_a_model_and_classical_harmonisation(gt_dir, tmp_path, small_model, monkeypatch):
    model_dir = tmp_path / "model"
    small_model.save_pretrained(model_dir)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no LPIPS weights there
    torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())).save(
        str(tmp_path / "feat.pt")
    )
    out = tmp_path / "out"
    rc = main(["evaluate", "--gt", str(gt_dir), "--model", str(model_dir), "--harmonize", "classical",
               "--model-size", "64", "--out", str(out), "--fid-weights", str(tmp_path / "feat.pt"), "-q", "--gallery", "2"])
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


def test_sam_harmonisation_row_with_a_small_sam(gt_dir, small_model):
    from test_masks import tiny_sam

    res = evaluate_folder(
        gt_dir, colorizer=Colorizer(small_model, device="cpu", size=64), harmonize="sam", sam=tiny_sam(),
        mask_params={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
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
