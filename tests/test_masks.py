"""Mask sources: the real segment-anything automatic mask generator on a small SAM built
here (random weights: the point is the code path), SAM checkpoint loading from a file and
from a populated Hugging Face cache, the classical fallback, and caller-given masks.

Only the tests that use segment-anything skip without it (and fail in CI, helpers.need);
the classical and given-mask tests always run."""

import dataclasses
from functools import partial

import numpy as np
import pytest
import torch
from helpers import need, populate_cache, run_with_unreachable_hub, tiny_sam
from PIL import Image

from ccc_nodes import Colorizer
from ccc_nodes.steps.harmonize import harmonize
from ccc_nodes.steps.masks import (
    MaskSet,
    SamLoadError,
    classical_masks,
    generate_masks,
    given_masks,
    grey_image,
    load_sam,
    overlay,
    sam_masks,
)


@pytest.fixture(scope="module")
def sam():
    """A tiny real SAM: a test that takes it needs segment-anything."""
    return tiny_sam()


@pytest.fixture(scope="module")
def image():
    from skimage import data

    return data.coffee()[::4, ::4]  # (100, 150, 3) uint8


def test_grey_image_is_what_the_model_sees(image):
    grey = grey_image(image)
    assert grey.shape == (100, 150, 3) and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 2]).all()
    # The sRGB grey of the image's L: close to the usual luma of the colour image.
    luma = image @ np.array([0.2126, 0.7152, 0.0722])
    assert np.abs(grey[..., 0].astype(float) - luma).mean() < 12
    assert grey_image(image, max_side=60).shape == (40, 60, 3)


@pytest.mark.slow
def test_grey_image_of_a_long_thin_image_keeps_a_short_side():
    strip = np.tile(np.linspace(0, 255, 20000).astype(np.uint8), (20, 1))  # 20000x20
    grey = grey_image(strip, max_side=512)
    assert grey.shape == (16, 16000, 3)  # not 1x512: the shorter side keeps 16 px, pixels stay <= 512^2
    assert grey.shape[0] * grey.shape[1] <= 512**2
    assert grey_image(strip.T, max_side=512).shape == (16000, 16, 3)
    assert grey_image(np.zeros((5, 3000), np.uint8), max_side=512).shape == (5, 3000, 3)  # already thin: as it is
    longer = grey_image(np.zeros((20, 100000), np.uint8), max_side=512)  # too long for 16 rows in 512^2 pixels
    assert longer.shape[:2] == (7, 36204) and longer.shape[0] * longer.shape[1] <= 512**2
    masks = classical_masks(strip)
    assert masks.size == (16, 16000)


def test_sam_automatic_mask_generator_runs_end_to_end(sam, image):
    masks = sam_masks(image, sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert isinstance(masks, MaskSet) and masks.source == "sam:custom"
    assert masks.size == (100, 150) and masks.masks.dtype == torch.bool
    assert len(masks) >= 1
    assert (masks.areas[:-1] >= masks.areas[1:]).all()  # largest first
    # Its thresholds are passed through: an impossible IoU threshold leaves nothing.
    none = sam_masks(image, sam, points_per_side=4, pred_iou_thresh=1e9, stability_score_thresh=0.0)
    assert len(none) == 0 and none.size == (100, 150)


@pytest.mark.slow
def test_sam_masks_drive_harmonisation_of_a_real_prediction(sam, image, small_model):
    pred = Colorizer(small_model, device="cpu", size=64).predict(image)[0]
    # The untrained model predicts one colour: give it noisy logits, so there is work to do.
    pred = dataclasses.replace(pred, logits=pred.logits + 3 * torch.randn(pred.logits.shape, generator=torch.Generator().manual_seed(0)))
    masks = generate_masks(pred, "sam", sam=sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    out = harmonize(pred, masks, dominance=0.0)
    assert out.source == "sam:custom" and out.rgb().shape == (1, 3, 100, 150)
    assert out.masks_used >= 1 and out.changed > 0


def test_load_sam_from_a_file_and_from_the_hub_cache(sam, tmp_path):
    ckpt = tmp_path / "ckpt" / "tiny_sam.pth"
    ckpt.parent.mkdir()
    torch.save(sam.state_dict(), ckpt)
    loaded = load_sam(ckpt, builder=partial(tiny_sam, seed=1))
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(loaded.state_dict()[key], sam.state_dict()[key])
    assert not loaded.training
    # A folder with one checkpoint works too.
    assert torch.equal(load_sam(ckpt.parent, builder=partial(tiny_sam, seed=1)).state_dict()[key], sam.state_dict()[key])
    # A Hub repo id resolves through huggingface_hub's cache, with no network.
    cache = tmp_path / "hub"
    populate_cache(cache, ckpt.parent, repo="ccc-test/tiny-sam")
    hub = load_sam("ccc-test/tiny-sam", filename="tiny_sam.pth", builder=partial(tiny_sam, seed=2),
                   cache_dir=cache, local_files_only=True)
    assert torch.equal(hub.state_dict()[key], sam.state_dict()[key])


@pytest.mark.slow
def test_load_sam_with_an_unreachable_hub_fails_at_once(tmp_path):
    need("segment_anything", "pip install -e '.[sam]'")  # load_sam refuses before any download without it
    r = run_with_unreachable_hub(tmp_path / "hub", (
        "from ccc_nodes.steps.masks import load_sam, SamLoadError\n"
        "try:\n    load_sam('ccc-test/absent-sam')\n"
        "except SamLoadError as e:\n    print('ERROR', e); sys.exit(3)\n"))
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Retrying" not in r.stderr  # no back-off storm before the message
    assert "sam_vit_b_01ec64.pth of Hub repo 'ccc-test/absent-sam'" in r.stdout
    assert "the Hub cannot be reached" in r.stdout and "pass the file's path" in r.stdout


def test_load_sam_errors_say_what_to_do(sam, tmp_path):
    with pytest.raises(SamLoadError, match="does not exist"):
        load_sam(tmp_path / "missing.pth")
    with pytest.raises(SamLoadError, match="unknown SAM model type"):
        torch.save(sam.state_dict(), tmp_path / "x.pth")
        load_sam(tmp_path / "x.pth", model_type="vit_q")
    with pytest.raises(SamLoadError, match=r"sam_vit_b_01ec64\.pth.*not in the local Hugging Face cache.*by hand"):
        load_sam("ccc-test/absent", cache_dir=tmp_path / "empty", local_files_only=True)
    with pytest.raises(SamLoadError, match="not a SAM"):
        bad = tiny_sam()
        bad.mask_decoder.iou_token = torch.nn.Embedding(1, 16)  # another width: the file will not fit
        load_sam(tmp_path / "x.pth", builder=lambda: bad)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(SamLoadError, match="not a SAM"):
        load_sam(tmp_path / "text.pth", builder=tiny_sam)
    (tmp_path / "lines.pth").write_text("root:x:0:0:root:/root:/bin/bash\nd:x:1:1::/:/bin/sh\n")  # torch.load: IndexError
    with pytest.raises(SamLoadError, match="not a SAM"):
        load_sam(tmp_path / "lines.pth", builder=tiny_sam)


def test_classical_masks_partition_the_image(image):
    for method in ("felzenszwalb", "slic"):
        masks = classical_masks(image, method=method, min_region_area=0.0)
        assert masks.source == f"classical:{method}" and masks.size == (100, 150)
        assert len(masks) > 3
        assert (masks.masks.sum(dim=0) == 1).all()  # disjoint and covering
    big = classical_masks(image, min_region_area=0.05)
    assert (big.areas >= 0.05 * 100 * 150).all()
    with pytest.raises(ValueError, match="felzenszwalb"):
        classical_masks(image, method="watershed")


def test_auto_falls_back_to_classical_and_says_so(image):
    masks = generate_masks(image, "auto")
    assert masks.source.startswith("classical:") and "no SAM model" in masks.note
    with pytest.raises(ValueError, match="load_sam"):
        generate_masks(image, "sam")


@pytest.mark.slow
def test_auto_uses_a_sam_it_is_given(image, sam):
    assert generate_masks(image, "auto", sam=sam, points_per_side=2, pred_iou_thresh=0.0,
                          stability_score_thresh=0.0).source == "sam:custom"


def test_given_masks_in_every_form(image):
    comfy = torch.zeros(2, 50, 75)  # a ComfyUI MASK batch, float 0..1, half size
    comfy[0, :, :30] = 1.0
    comfy[1, 10:20, 10:20] = 0.8
    masks = generate_masks(image, comfy)
    assert masks.source == "given" and masks.size == (100, 150) and len(masks) == 2
    assert int(masks.areas[0]) == 100 * 60  # resized to the image
    labels = np.zeros((100, 150), dtype=np.int32)
    labels[:, 100:] = 7
    lm = given_masks(labels)
    assert len(lm) == 2 and lm.coverage() == 1.0
    assert len(given_masks(np.ones((100, 150), dtype=bool))) == 1
    with pytest.raises(ValueError, match="shape"):
        given_masks(torch.zeros(1, 1, 4, 4))


def test_overlay_paints_each_mask(image):
    masks = given_masks(np.arange(150)[None, :].repeat(100, 0) // 50)  # three vertical bands
    pic = overlay(image, masks, alpha=1.0)
    assert isinstance(pic, Image.Image) and pic.size == (150, 100)
    px = np.asarray(pic)
    band_colours = {tuple(px[50, x]) for x in (25, 75, 125)}
    assert len(band_colours) == 3  # one colour per mask
    assert (px[50, 50] == 255).all() or (px[50, 49] == 255).all()  # outlines are white
