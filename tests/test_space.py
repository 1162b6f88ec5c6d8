"""The Gradio Space (space/app.py): its handler on real inputs, and its API served on
loopback and called through gradio_client. The browser tests are in test_space_browser.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from concurrent.futures import wait
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import EXAMPLES, free_port, load_app, make_model, need, serve, space_client
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = need("gradio")


from ccc_nodes import ColorClasses, Decoding, Harmonization
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.settings import DECODE_MODES

ROOT = Path(__file__).resolve().parents[1]
RUN_DEFAULTS = {"model": "", "size": 224, "decode": "argmax", "harmonize_with": "off", "dominance": 0.3,
                "max_dev": 12.0, "min_area": 0.002, "sam_checkpoint": "", "sam_type": "vit_b", "points_per_side": 8,
                "temperature": 0.38}


def run(app, photo, **overrides):
    return app.run(photo, **{**RUN_DEFAULTS, **overrides})


# ----------------------------------------------------------------------------- the handler


def test_grey_photo_gives_colour_at_full_size_and_no_metrics(app, model):
    slider, class_pic, masks_pic, table, download, notes = run(app, str(EXAMPLES / "grey" / "chelsea.jpg"))
    before, after = slider
    assert before.shape == after.shape == (300, 451, 3) and class_pic.shape == (300, 451, 3)
    assert np.array_equal(before[..., 0], before[..., 1])  # the before side is grey
    assert masks_pic is None and table == []
    assert "Grey photo" in notes
    saved = np.asarray(Image.open(download))
    assert saved.shape == (300, 451, 3) and np.array_equal(saved, after)


@pytest.mark.slow
def test_colour_photo_is_kept_as_reference_and_measured(app, model):
    photo = str(EXAMPLES / "reference" / "chelsea.jpg")
    slider, _, _, table, _, notes = run(app, photo)
    before, after = slider
    assert np.array_equal(before[..., 0], before[..., 2])  # the colour photo was made grey
    rows = {r[0]: r[1] for r in table}
    assert {"MSE", "PSNR (dB)", "SSIM", "UIQI", "TAR (%)", "CNR", "CCAR (%)", "CF", "delta-CF"} <= set(rows)
    assert "reference" in notes
    # The table is what the core's metrics say about this result (no numbers made up here).
    ref = np.asarray(Image.open(photo).convert("RGB"))
    expected = app.compare(app.eval_crop(after)[None], app.eval_crop(ref)[None], app.get_model(model).classes)
    assert float(rows["MSE"]) == pytest.approx(expected["mse"], rel=1e-3)
    assert float(rows["TAR (%)"]) == pytest.approx(expected["tar"], rel=1e-3, abs=1e-6)
    lpips = rows["LPIPS"]
    assert (lpips == "n/a" and "LPIPS n/a (its weights are not installed on this server)" in notes) or float(lpips) >= 0


@pytest.mark.slow
def test_decode_modes_differ_and_input_size_is_used(app, model):
    photo = str(EXAMPLES / "grey" / "coffee.jpg")
    argmax = run(app, photo)[0][1]
    mean = run(app, photo, decode="annealed-mean")[0][1]
    assert argmax.shape == mean.shape and not np.array_equal(argmax, mean)
    assert "input 128" in run(app, photo, size=128)[5]


@pytest.mark.slow
def test_classical_harmonisation_shows_masks_and_says_what_it_did(app, model):
    _, _, masks_pic, _, _, notes = run(app, str(EXAMPLES / "grey" / "astronaut.jpg"), harmonize_with="classical")
    assert masks_pic is not None and masks_pic.shape[2] == 3 and masks_pic.std() > 0
    assert "Harmonised with classical (Felzenszwalb) segmentation:" in notes and "masks had a dominant class" in notes
    assert "classical:" not in notes  # the page speaks in words, not the core's ids


@pytest.mark.slow
def test_sam_without_checkpoint_falls_back_and_says_so(app, model):
    notes = run(app, str(EXAMPLES / "grey" / "rocket.jpg"), harmonize_with="sam")[5]
    assert "SAM needs a checkpoint" in notes and "Harmonised with classical (Felzenszwalb) segmentation" in notes
    notes = run(app, str(EXAMPLES / "grey" / "rocket.jpg"), harmonize_with="sam", sam_checkpoint="/nowhere/sam.pth")[5]
    assert "SAM could not load '/nowhere/sam.pth'" in notes and "Harmonised with classical" in notes


@pytest.mark.slow
def test_a_broken_sam_checkpoint_falls_back_and_is_logged_once(app, model, tmp_path, caplog):
    """A text file given as the checkpoint (as a visitor typed /etc/passwd): the request
    goes on with classical masks and a short note; the server logs one line, no traceback."""
    bad = tmp_path / "passwd"
    bad.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    photo = str(EXAMPLES / "grey" / "rocket.jpg")
    with caplog.at_level(logging.INFO, logger="ccc_space"):
        for _ in range(2):
            notes = run(app, photo, harmonize_with="sam", sam_checkpoint=str(bad))[5]
            assert "SAM could not load" in notes and "Harmonised with classical (Felzenszwalb) segmentation" in notes
            assert "list index" not in notes and "Traceback" not in notes
    lines = [r for r in caplog.records if "could not be loaded" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and lines[0].exc_info is None


@pytest.mark.slow
def test_any_failure_loading_sam_falls_back(app, model, monkeypatch):
    """Whatever loading SAM raises (not only the core's SamLoadError), the page goes on."""
    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr(app.common, "load_sam", broken)
    notes = run(app, str(EXAMPLES / "grey" / "rocket.jpg"), harmonize_with="sam", sam_checkpoint="owner/some-sam")[5]
    assert "SAM could not load 'owner/some-sam'" in notes and "Harmonised with classical" in notes


@pytest.mark.slow
def test_sam_harmonisation_runs_the_real_mask_generator(app, model):
    """A tiny SAM built here (random weights) stands in the page's SAM cache: the page's
    path through SamAutomaticMaskGenerator and harmonise runs end to end."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    sam = Sam(
        image_encoder=ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=32, depth=1, num_heads=2,
                                      out_chans=32, window_size=8, global_attn_indexes=()),
        prompt_encoder=PromptEncoder(embed_dim=32, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=32, iou_head_hidden_dim=16,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2)),
    ).eval()
    app.MODELS.put(("sam", "tiny-sam", "vit_b"), sam)
    try:
        notes = run(app, str(EXAMPLES / "grey" / "chelsea.jpg"), harmonize_with="sam", sam_checkpoint="tiny-sam",
                    points_per_side=4)[5]
    finally:
        app.MODELS.pop(("sam", "tiny-sam", "vit_b"))
    assert "Harmonised with SAM masks" in notes


@pytest.mark.slow
def test_large_photo_keeps_full_resolution_download(app, model, tmp_path, monkeypatch):
    stripes = np.where(np.arange(3000) % 2, 140, 100).astype(np.uint8)  # 1-pixel stripes, far below model scale
    big = np.repeat(stripes[None], 1800, axis=0)  # 5.4 MP
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    # The display-only pictures (grey "before", class map) are drawn at display size, not
    # drawn at 3000x1800 and then shrunk: that took seconds per picture on large photos.
    drawn = []
    grey_image, class_map_picture = app.grey_image, app.class_map_picture
    monkeypatch.setattr(app.handlers, "grey_image",
                        lambda L, *a: drawn.append(tuple(L.shape[-2:])) or grey_image(L, *a))
    monkeypatch.setattr(app.handlers, "class_map_picture",
                        lambda c, k, size, *a: drawn.append(tuple(size)) or class_map_picture(c, k, size, *a))
    slider, class_pic, _, _, download, _ = run(app, str(path))
    assert drawn == [(960, app.DISPLAY_SIDE)] * 2
    assert max(slider[1].shape[:2]) == app.DISPLAY_SIDE and max(class_pic.shape[:2]) == app.DISPLAY_SIDE
    full = np.asarray(Image.open(download))
    assert full.shape == (1800, 3000, 3)
    # The full-resolution L is joined with the colour: the stripes survive in the result's L*
    # (input: L* 42 / 56 alternating), which a model-resolution result could not hold.
    L = rgb_to_lab(torch.from_numpy(full[895:905].astype(np.float32) / 255).permute(2, 0, 1)[None])[0, 0]
    assert (L[:, 1::2] - L[:, 0::2]).mean() > 8


@pytest.mark.parametrize(
    "content, name, message",
    [
        (b"just some text, not a picture", "notes.txt", "not an image file"),
        ((EXAMPLES / "grey" / "chelsea.jpg").read_bytes()[:3000], "broken.jpg", "corrupt or truncated"),
    ],
    ids=["text", "truncated-jpeg"],
)
def test_bad_files_give_a_clear_message(app, model, tmp_path, content, name, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(gr.Error) as e:
        run(app, str(path))
    assert message in e.value.message and name in e.value.message and str(tmp_path) not in e.value.message
    assert "Upload a JPEG, PNG" in e.value.message  # unreadable: say what the page takes
    assert e.value.print_exception is False  # a bad upload is no server fault: no traceback in the log


def test_huge_photo_is_refused_before_decoding(app, model, tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (9000, 5000)).save(path)  # 45 MP, a few KB on disk
    with pytest.raises(gr.Error) as e:
        run(app, str(path))
    assert e.value.message == "huge.png: the photo is 45 MP; this Space takes up to 40 MP: shrink it."


@pytest.mark.slow
def test_tiny_photo_is_shown_enlarged_with_sharp_pixels(app, model, tmp_path):
    """An 8x8 photo: the pictures shown are enlarged by a whole factor (nearest neighbour)
    so the panes keep their size; the download stays 8x8."""
    tiny = np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)
    path = tmp_path / "tiny.png"
    Image.fromarray(tiny).save(path)
    slider, class_pic, _, _, download, _ = run(app, str(path))
    before, after = slider
    assert before.shape == after.shape == class_pic.shape == (256, 256, 3)
    blocks = before.reshape(8, 32, 8, 32, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # each photo pixel is a sharp 32x32 block
    assert np.asarray(Image.open(download)).shape == (8, 8, 3)
    assert app.display_size(4000, 6000) == (1067, 1600) and app.display_size(300, 451) == (300, 451)
    assert app.display_size(10, 1000) == (10, 1000)  # enlarging stops at the display side


@pytest.mark.slow
def test_typed_input_size_is_rounded_to_a_multiple_of_32(app, model):
    notes = run(app, str(EXAMPLES / "grey" / "coffee.jpg"), size=200)[5]
    assert "input 192" in notes and "Input size 200 was rounded to 192" in notes
    assert [app.snap_size(v) for v in (200, 208, 224, 100, 5000)] == [192, 224, 224, 128, 768]
    assert "rounded" not in run(app, str(EXAMPLES / "grey" / "coffee.jpg"), size=256)[5]


@pytest.mark.slow
def test_transparency_is_kept_in_the_download(app, model, tmp_path):
    rgba = np.zeros((60, 80, 4), dtype=np.uint8)
    rgba[..., :3] = np.linspace(0, 255, 80, dtype=np.uint8)[None, :, None]
    rgba[..., 3] = np.where(np.arange(80) < 40, 255, 0).astype(np.uint8)[None]
    rgba[:30, :, 3] = 128
    path = tmp_path / "cut-out.png"
    Image.fromarray(rgba, "RGBA").save(path)
    *_, download, notes = run(app, str(path))
    saved = Image.open(download)
    assert saved.mode == "RGBA" and saved.size == (80, 60)
    assert np.array_equal(np.asarray(saved)[..., 3], rgba[..., 3])
    assert "transparency is kept" in notes
    *_, download, notes = run(app, str(EXAMPLES / "grey" / "coffee.jpg"))
    assert Image.open(download).mode == "RGB" and "transparency" not in notes


@pytest.mark.slow
def test_annealed_mean_temperature_is_used(app, model):
    photo = str(EXAMPLES / "grey" / "coffee.jpg")
    sharp = run(app, photo, decode="annealed-mean", temperature=0.05)
    flat = run(app, photo, decode="annealed-mean", temperature=1.0)
    assert not np.array_equal(sharp[0][1], flat[0][1])
    assert "annealed-mean (T = 0.05)" in sharp[5] and "annealed-mean (T = 1)" in flat[5]
    with pytest.raises(gr.Error, match="Temperature"):
        run(app, photo, decode="annealed-mean", temperature=0)


@pytest.mark.slow
def test_progress_names_each_stage(app, model):
    stages = []
    run(app, str(EXAMPLES / "reference" / "chelsea.jpg"), harmonize_with="classical",
        progress=lambda fraction, desc=None: stages.append(desc))
    assert stages == ["Reading the photo", "Loading the model", "Colorizing", "Harmonising",
                      "Measuring against the reference", "Saving the full-resolution PNG"]


def test_user_errors_leave_no_traceback_and_failures_are_logged_once(app, model, monkeypatch, caplog):
    with pytest.raises(gr.Error) as e:
        run(app, None)
    assert e.value.print_exception is False

    def crash(*args, **kwargs):
        raise RuntimeError("out of memory in /srv/secret/place")

    monkeypatch.setattr(app.handlers, "colorize_on_device", crash)
    with caplog.at_level(logging.INFO, logger="ccc_space"), pytest.raises(gr.Error) as e:
        run(app, str(EXAMPLES / "grey" / "coffee.jpg"))
    assert "Colorization failed on the server (RuntimeError)" in e.value.message
    assert "/srv/secret" not in e.value.message and e.value.print_exception is False
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR  # one traceback, in the server log


@pytest.mark.slow
def test_lpips_unavailable_note_names_nothing_on_the_server(app, model, monkeypatch):
    def missing(*args, **kwargs):
        raise app.MetricUnavailable("LPIPS needs /root/.cache/torch/alexnet.pth: run `python -c ...` and copy it")

    monkeypatch.setattr(app.common, "load_lpips", missing)
    app.MODELS.pop(("lpips",))
    try:
        _, _, _, table, _, notes = run(app, str(EXAMPLES / "reference" / "coffee.jpg"))
    finally:
        app.MODELS.pop(("lpips",))
    assert "LPIPS n/a (its weights are not installed on this server)." in notes
    assert "/root" not in notes and "python" not in notes
    assert [r[1] for r in table if r[0] == "LPIPS"] == ["n/a"]


def component(demo, elem_id: str):
    found = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


@pytest.mark.slow
def test_locked_page_fixes_model_and_sam(app, model, tmp_path, monkeypatch):
    """CCC_SPACE_LOCKED=1 (a public page): the model and SAM boxes cannot be changed, the
    handler uses the configured ones whatever it is sent, and nothing in the page names a
    server path."""
    folder = tmp_path / "server" / "my_model"
    app.get_model(model).save_pretrained(folder)
    bad_sam = tmp_path / "server" / "sam_vit_b.pth"
    bad_sam.write_text("not a checkpoint")
    monkeypatch.setenv(app.LOCKED_ENV, "1")
    monkeypatch.setenv(app.MODEL_ENV, str(folder))
    monkeypatch.setenv(app.SAM_ENV, str(bad_sam))
    server = str(tmp_path / "server")

    demo = app.build_demo()
    config = str(demo.get_config_file())
    assert server not in config
    for elem_id, value in (("model", "my_model"), ("sam-checkpoint", "sam_vit_b.pth")):
        box = component(demo, elem_id)
        assert box.interactive is False and box.value == value
    assert component(demo, "sam-type").interactive is False

    notes = run(app, str(EXAMPLES / "grey" / "rocket.jpg"), model="/etc", harmonize_with="sam",
                sam_checkpoint="/etc/passwd")[5]
    assert "model `my_model`" in notes and "/etc" not in notes and server not in notes
    assert "SAM could not be loaded on this server" in notes
    assert ("ccc", "/etc") not in app.MODELS

    monkeypatch.setenv(app.SAM_ENV, "")
    if not app.default_sam()[0]:  # no SAM checkpoint beside app.py either
        notes = run(app, str(EXAMPLES / "grey" / "rocket.jpg"), harmonize_with="sam")[5]
        assert "SAM is not set up on this server" in notes and "Harmonised with classical" in notes

    monkeypatch.setenv(app.MODEL_ENV, str(tmp_path / "server" / "gone"))
    with pytest.raises(gr.Error) as e:
        run(app, str(EXAMPLES / "grey" / "rocket.jpg"), model="default")
    assert e.value.message == "The model could not be loaded on this server; please try again later."


@pytest.mark.slow
def test_unlocked_page_offers_sam_only_with_a_checkpoint(app, model, monkeypatch):
    monkeypatch.delenv(app.LOCKED_ENV, raising=False)
    monkeypatch.setenv(app.SAM_ENV, "")
    if app.default_sam()[0]:
        pytest.skip("a SAM checkpoint lies beside space/app.py")
    demo = app.build_demo()
    assert component(demo, "model").interactive is not False
    harmonize = component(demo, "harmonize")
    assert dict((v, k) for k, v in harmonize.choices)["sam"] == "SAM (no checkpoint)"
    assert "SAM needs a checkpoint, else classical masks are used" in harmonize.info
    monkeypatch.setenv(app.SAM_ENV, "owner/sam-repo")
    harmonize = component(app.build_demo(), "harmonize")
    assert dict((v, k) for k, v in harmonize.choices)["sam"] == "SAM" and "checkpoint" not in harmonize.info


def test_steps_around_a_run_clear_the_outputs_and_show_what_is_there(app):
    before_after, class_pic, masks_pic, table, download, notes = app.clear_outputs()
    assert before_after is None and class_pic is None and masks_pic is None and notes == ""
    assert table == {"__type__": "update", "value": [], "visible": False}
    assert download == {"__type__": "update", "value": None, "visible": False}
    visible = [[u["visible"] for u in app.reveal(*args)]
               for args in (([], None), ([["", "", ""]], None), ([["MSE", "0.01", "..."]], "/tmp/x.png"))]
    assert visible == [[False, False], [False, False], [True, True]]


def test_missing_photo_and_bad_model_are_explained(app, model, tmp_path):
    with pytest.raises(gr.Error, match="Upload a photo"):
        run(app, None)
    with pytest.raises(gr.Error) as e:
        run(app, str(EXAMPLES / "grey" / "chelsea.jpg"), model=str(tmp_path / "no_such_model"))
    assert "no_such_model" in e.value.message and "does not exist" in e.value.message


def test_models_are_loaded_once(app, model):
    assert app.get_model(model) is app.get_model(model)


def test_cache_loads_each_key_once_across_requests_and_bounds_each_kind(app, model):
    from concurrent.futures import ThreadPoolExecutor

    app.get_model(model)
    calls = []

    def slow_load():
        calls.append(1)
        time.sleep(0.3)
        return object()

    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: app.cached(("test", "a"), slow_load), range(4)))
        assert len(calls) == 1 and all(g is got[0] for g in got)
        for name in "bcd":
            app.cached(("test", name), object)
        kept = [k for k in app.MODELS if k[0] == "test"]
        assert kept == [("test", "b"), ("test", "c"), ("test", "d")]  # oldest dropped, 3 kept
        assert any(k[0] == "ccc" for k in app.MODELS)  # other kinds untouched
    finally:
        for k in [k for k in app.MODELS if k[0] == "test"]:
            app.MODELS.pop(k)


def test_the_space_and_the_nodes_fill_the_one_model_cache(app, model):
    from ccc_nodes.core.cache import KEEP, MODELS
    from ccc_nodes.interfaces import nodes

    net = app.get_model(model)
    (colorizer,) = nodes.CCCModelLoader().load("default", "cpu", "fp32", repo_or_path=model)
    node_key = ("ccc", model, None, "cpu", "fp32")
    assert ("ccc", model) in MODELS and node_key in MODELS  # both interfaces' loads, in one cache
    assert nodes.CCCModelLoader().load("default", "cpu", "fp32", repo_or_path=model)[0] is colorizer  # loaded once
    assert app.get_model(model) is net
    try:  # one bound for the kind, whichever interface loaded: KEEP newer "ccc" networks push both out
        for i in range(KEEP):
            app.cached(("ccc", f"other-{i}"), object)
        assert node_key not in MODELS and ("ccc", model) not in MODELS
    finally:
        for i in range(KEEP):
            MODELS.pop(("ccc", f"other-{i}"))


# ----------------------------------------------------------------------------- figures


def test_table_ii_is_reproduced():
    figures = load_app().bin_table
    rows = {r[0]: r for r in figures()}
    assert [rows[s][2] for s in (4, 6, 8, 10, 12, 14)] == [2916, 1296, 784, 484, 324, 256]  # Table II
    assert rows[6][3] == pytest.approx(3.0) and rows[6][4] == pytest.approx(1.5)  # s/2, s/4


def test_class_grid_marks_the_kept_classes():
    app = load_app()
    full = np.asarray(app.class_grid(ColorClasses(6)), dtype=np.float32)
    few = np.asarray(app.class_grid(ColorClasses(6, kept=[666])), dtype=np.float32)
    assert full.shape == few.shape and full.shape[2] == 3
    assert few.mean() > full.mean() + 20  # dropped bins are faded towards white


def test_class_map_picture_shows_bin_centres(app):
    classes = ColorClasses(6, kept=[666, 18 * 36 + 30])  # a*b* = (3, 3) near-neutral, (75, 3) red
    pic = app.class_map_picture(torch.tensor([[[0, 1], [1, 0]]]), classes, (40, 60))
    assert pic.shape == (40, 60, 3)
    neutral, red = pic[5, 5].astype(int), pic[5, 45].astype(int)
    assert abs(neutral[0] - neutral[1]) < 15 and red[0] > red[1] + 60


# ----------------------------------------------------------------------------- served: the API


@pytest.fixture(scope="module")
def served(app, model):
    demo, url = serve(app, model)
    yield url
    demo.close()


@pytest.mark.slow
def test_api_colorizes_through_gradio_client(served):
    from gradio_client import handle_file

    client = space_client(served)
    slider, _, _, table, download, notes = client.predict(
        handle_file(str(EXAMPLES / "reference" / "coffee.jpg")), api_name="/colorize", **RUN_DEFAULTS
    )
    after = np.asarray(Image.open(slider[1]))
    assert after.shape[:2] == (400, 600)
    assert np.asarray(Image.open(download)).shape == (400, 600, 3)
    assert "TAR (%)" in [row[0] for row in table["data"]]
    assert "coffee.jpg" in notes


@pytest.mark.slow
def test_api_rounds_an_input_size_it_is_sent(served):
    from gradio_client import handle_file

    client = space_client(served)
    photo = handle_file(str(EXAMPLES / "grey" / "coffee.jpg"))
    for sent, used in ((200, 192), (5000, 768)):  # 5000: out of the slider's range, still no refusal
        notes = client.predict(photo, api_name="/colorize", **{**RUN_DEFAULTS, "size": sent})[5]
        assert f"Input size {sent} was rounded to {used}" in notes and f"input {used}," in notes


@pytest.mark.slow
def test_api_reports_a_non_image(served, tmp_path, capfd):
    from gradio_client import handle_file

    fake = tmp_path / "letter.jpg"
    fake.write_text("Dear reader, this is not a photo.")
    client = space_client(served)
    with pytest.raises(Exception) as e:
        client.predict(handle_file(str(fake)), api_name="/colorize", **RUN_DEFAULTS)
    assert "letter.jpg: not an image file" in str(e.value)
    photo = handle_file(str(EXAMPLES / "grey" / "coffee.jpg"))
    with pytest.raises(Exception) as e:  # the reference photo is read by the core too, not failed inside Gradio
        client.predict(photo, api_name="/colorize", **{**RUN_DEFAULTS, "reference": handle_file(str(fake))})
    assert "letter.jpg: not an image file" in str(e.value) and "preprocess" not in str(e.value)
    for name, value, message in (("temperature", 5, "Temperature must lie in [0.05, 1], got 5"),
                                 ("dominance", 3, "Dominance must lie in [0.05, 1], got 3"),
                                 ("decode", "median", f"Decode must be one of {', '.join(DECODE_MODES)}, got 'median'"),
                                 ("harmonize_with", "paint", "Harmonisation must be one of off, sam, classical"),
                                 ("sam_type", "vit_x", "SAM type must be one of vit_b, vit_l, vit_h")):
        with pytest.raises(Exception) as e:
            client.predict(photo, api_name="/colorize", **{**RUN_DEFAULTS, name: value})
        assert message in str(e.value)
    assert "Traceback" not in capfd.readouterr().err  # a visitor's mistake is no server fault


@pytest.mark.slow
def test_concurrent_requests_are_queued_and_all_answered(served):
    from gradio_client import handle_file

    client = space_client(served)
    jobs = [client.submit(handle_file(str(p)), api_name="/colorize", **RUN_DEFAULTS)
            for p in sorted((EXAMPLES / "grey").glob("*.jpg"))]
    wait(jobs, timeout=240)
    names = [job.result()[5].split("**")[1] for job in jobs]
    assert names == sorted(p.name for p in (EXAMPLES / "grey").glob("*.jpg"))


@pytest.mark.slow
def test_python_space_app_py_starts_the_page(tmp_path):
    """The README's command: ``python space/app.py``, port from $PORT, model from --model."""
    import httpx

    model = str(tmp_path / "small_model")
    make_model(kept=[666, 667, 702]).save_pretrained(model)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("CCC_SPACE_MODEL", None)
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "space/app.py", "--host", "127.0.0.1", "--model", model],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, config = time.monotonic() + 180, None
        while config is None and time.monotonic() < deadline:
            assert proc.poll() is None, f"space/app.py exited: {log.read_text()[-2000:]}"
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
            except (httpx.TransportError, ValueError):
                time.sleep(0.5)
        assert config is not None, f"no page after 180 s: {log.read_text()[-2000:]}"
        assert config["title"] == "CCC++ colorization"
        assert model in str(config["components"])  # the model box starts with --model
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ----------------------------------------------------------------------------- colour hints


def _ab_near(rgb: np.ndarray, y0: int, y1: int, x0: int, x1: int, colour: str) -> float:
    """Mean a*b* distance of a patch of an sRGB uint8 picture to ``colour``'s a*b*."""
    import torch

    from ccc_nodes.core.color import rgb_to_lab
    from ccc_nodes.steps.hints import parse_color

    lab = rgb_to_lab(torch.from_numpy(rgb[y0:y1, x0:x1] / 255.0).permute(2, 0, 1).float())
    return float((lab[1:] - torch.tensor(parse_color(colour)).view(2, 1, 1)).norm(dim=0).mean())


@pytest.mark.slow
def test_hints_and_a_reference_steer_the_result(app, model):
    photo = str(EXAMPLES / "grey" / "chelsea.jpg")
    (_, plain), *_ = run(app, photo)
    (_, hinted), _, _, _, download, notes = run(app, photo, hints="225,150,#2e86c1,1")
    assert _ab_near(hinted, 140, 160, 215, 235, "#2e86c1") < 12 < _ab_near(plain, 140, 160, 215, 235, "#2e86c1")
    assert "Steered by 1 colour hint." in notes
    assert np.array_equal(np.asarray(Image.open(download)), hinted)
    (_, steered), *_, notes = run(app, photo, reference=str(EXAMPLES / "reference" / "coffee.jpg"))
    assert not np.array_equal(steered, plain) and "reference palette (strength 1)" in notes
    with pytest.raises(app.gr.Error, match="hint line 2"):
        run(app, photo, hints="1,1,#000000\n1,1,purple")
    with pytest.raises(app.gr.Error, match="outside the 451x300"):
        run(app, photo, hints="900,10,#000000")


def test_too_many_hints_are_refused_in_words_before_any_work(app, tmp_path, monkeypatch):
    """Two requests of 5,000 hint lines held both workers 88 s. The core's MAX_HINTS is said
    before the model is even loaded (a model that does not exist is never reached), and at
    the click that would pass it."""
    from ccc_nodes.steps.hints import MAX_HINTS

    monkeypatch.delenv(app.LOCKED_ENV, raising=False)
    photo = str(EXAMPLES / "grey" / "chelsea.jpg")
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(app.gr.Error, match=f"5,000 colour hints for one image; at most {MAX_HINTS} are taken"):
        run(app, photo, hints="\n".join(["225,150,#2e86c1,1"] * 5000), model=missing)
    with pytest.raises(app.gr.Error, match="does not exist"):  # the same request with fewer hints reaches the model
        run(app, photo, hints="\n".join(["225,150,#2e86c1,1"] * MAX_HINTS), model=missing)
    full = "\n".join(["10,10,#000000,1"] * MAX_HINTS)
    with pytest.raises(app.gr.Error, match=f"at most {MAX_HINTS}"):
        app.add_hint(photo, full, "#2e86c1", 0.5, app.gr.SelectData(None, {"index": [1, 1], "value": None}))


def test_a_click_on_the_picker_adds_a_hint_in_photo_pixels(app, tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (1280, 640), 128).save(big)  # shown at half size on the picker
    event = app.gr.SelectData(None, {"index": [100, 50], "value": None})
    text = app.add_hint(str(big), "10,10,#000000,1", "#2e86c1", 0.5, event)
    assert text == "10,10,#000000,1\n200,100,#2e86c1,0.5"
    picture = app.hint_view(str(big), text)
    assert picture.shape == (320, 640, 3) and tuple(picture[50, 100]) != (128, 128, 128)  # the ring is drawn
    assert app._hex("rgba(46, 134, 193, 1)") == "#2e86c1"


@pytest.mark.slow
def test_example_runs_are_cached_per_controls(app, model):
    photo = str(EXAMPLES / "grey" / "chelsea.jpg")
    controls = [RUN_DEFAULTS[k] for k in ("model", "size", "decode", "harmonize_with", "dominance", "max_dev",
                                          "min_area", "sam_checkpoint", "sam_type", "points_per_side", "temperature")]
    app.EXAMPLE_RUNS.clear()
    first = app.run_example(photo, *controls, "", None, 1.0)
    assert app.run_example(photo, *controls, "", None, 1.0) is first  # served from the cache
    other = app.run_example(photo, *controls[:2], "annealed-mean", *controls[3:], "", None, 1.0)
    assert other is not first and len(app.EXAMPLE_RUNS) == 2
    Path(first[4]).unlink()  # the download expired: run again
    assert app.run_example(photo, *controls, "", None, 1.0) is not first


def test_zero_gpu_duration_grows_with_the_work(app):
    small, big = np.zeros((300, 451, 3)), np.zeros((4000, 6000, 3))
    argmax, sam_at = Decoding("argmax"), lambda n: Harmonization("sam", points_per_side=n)
    plain = app.photo_seconds("default", small, 224, argmax, None)
    assert plain < app.photo_seconds("default", big, 224, argmax, None)
    assert plain == app.photo_seconds("default", small, 224, argmax, Harmonization("classical"))
    sam = app.photo_seconds("default", small, 224, argmax, sam_at(32))
    assert plain < app.photo_seconds("default", small, 224, argmax, sam_at(16)) < sam
    assert app.photo_seconds("default", big, 768, argmax, sam_at(64)) == 120


@pytest.mark.slow
def test_api_takes_hints_and_a_reference(served):
    from gradio_client import handle_file

    client = space_client(served)
    *_, notes = client.predict(handle_file(str(EXAMPLES / "grey" / "chelsea.jpg")), api_name="/colorize",
                               **RUN_DEFAULTS, hints="225,150,#2e86c1,1\n20,20,#c0392b",
                               reference=handle_file(str(EXAMPLES / "reference" / "coffee.jpg")))
    assert "Steered by 2 colour hints and the reference palette (strength 1)." in notes
