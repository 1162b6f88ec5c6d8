import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccc_nodes import Colorizer, Decoding, Harmonization, ImageError
from ccc_nodes.core.color import rgb_to_lab
from ccc_nodes.core.prediction import decode_ab, join_lab


def _lab(arr_rgb_uint8):
    t = torch.from_numpy(np.array(arr_rgb_uint8)).float().permute(2, 0, 1) / 255
    return rgb_to_lab(t).numpy()


@pytest.fixture(scope="module")
def colorizer(small_model):
    return Colorizer(small_model, device="cpu", size=64)


@pytest.mark.slow
def test_output_keeps_size_and_kind(colorizer, photo):
    pil = Image.fromarray(photo)
    out = colorizer(pil)
    assert isinstance(out, Image.Image) and out.size == pil.size and out.mode == "RGB"
    arr = colorizer(photo)
    assert isinstance(arr, np.ndarray) and arr.shape == photo.shape and arr.dtype == np.uint8
    ten = colorizer(torch.from_numpy(photo).permute(2, 0, 1).float() / 255)
    assert ten.shape == (3, *photo.shape[:2])
    f = colorizer(photo.astype(np.float32) / 255)
    assert f.dtype == np.float32 and f.shape == photo.shape


def test_full_resolution_L_is_kept(neutral_model, photo):
    out = Colorizer(neutral_model, device="cpu", size=64)(Image.fromarray(photo).convert("L"))
    lab_out = _lab(np.asarray(out))
    # class 666 decodes to its bin centre a* = b* = 3 everywhere
    assert np.abs(lab_out[1:] - 3.0)[:, 5:-5, 5:-5].mean() < 0.5
    L_in = _lab(np.repeat(np.asarray(Image.fromarray(photo).convert("L"))[..., None], 3, 2))[0]
    assert np.abs(lab_out[0] - L_in).max() < 0.6  # only 8-bit rounding differs: no blur from 64 px


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA", "La", "RGBa", "I;16", "I", "F", "CMYK", "1"])
def test_every_pil_mode(colorizer, photo, mode):
    im = Image.fromarray(photo)
    if mode == "La":
        im = Image.frombytes("La", im.size, im.convert("LA").tobytes())  # Pillow cannot convert to La
    elif mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        im = im.convert("L").convert("F")
    else:
        im = im.convert(mode)
    out = colorizer(im)
    assert out.size == im.size
    assert out.mode == ("RGBA" if mode in ("RGBA", "LA", "La", "RGBa") else "RGB")


def test_sixteen_bit_grey_uses_full_precision(neutral_model):
    ramp = (np.linspace(0, 65535, 256 * 64).reshape(64, 256)).astype(np.uint16)
    out = Colorizer(neutral_model, device="cpu", size=64)(ramp)
    assert out.dtype == np.uint16 and out.shape == (64, 256, 3)
    assert len(np.unique(out[..., 0])) > 1000  # more than 8 bits of tones survive


def test_alpha_is_kept(colorizer, photo):
    rgba = Image.fromarray(photo).convert("RGBA")
    alpha = np.zeros(photo.shape[:2], np.uint8)
    alpha[50:100] = 200
    rgba.putalpha(Image.fromarray(alpha))
    out = colorizer(rgba)
    assert np.array_equal(np.asarray(out)[..., 3], alpha)


def test_exif_orientation_is_applied(colorizer, photo):
    im = Image.fromarray(photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif.tobytes())
    buf.seek(0)
    loaded = Image.open(buf)
    out = colorizer(loaded)
    assert out.size == (photo.shape[0], photo.shape[1])


def test_batch_of_different_sizes_matches_one_by_one(small_model, photo):
    col = Colorizer(small_model, device="cpu", size=64, batch_size=3)
    ims = [photo, photo[:100, :77], photo[::2, ::3]]
    batch = col(ims)
    for im, out in zip(ims, batch, strict=True):
        assert out.shape == im.shape
        np.testing.assert_allclose(out.astype(int), col(im).astype(int), atol=1)


@pytest.mark.slow
def test_iter_colorize_is_lazy_and_equals_colorize(small_model, photo):
    col = Colorizer(small_model, device="cpu", size=64, batch_size=2)
    pulled = []

    def images():
        for i in range(5):
            pulled.append(i)
            yield photo[: 100 + 20 * i]

    it = col.iter_colorize(images())
    first = next(it)
    assert pulled == [0, 1]  # one batch read, not the whole stream
    rest = list(it)
    expected = col.colorize([photo[: 100 + 20 * i] for i in range(5)])
    assert all(np.array_equal(a, b) for a, b in zip([first, *rest], expected, strict=True))


def test_predictions_give_classes_and_probabilities(colorizer, photo):
    (pred,) = colorizer.predict([photo])
    K = colorizer.classes.K
    assert pred.logits.shape == (1, K, 16, 16)
    assert torch.allclose(pred.probs.sum(1), torch.ones(1, 16, 16), atol=1e-5)
    assert pred.class_map.shape == (1, 16, 16) and pred.class_map.max() < K
    assert pred.size == photo.shape[:2]
    argmax = pred.rgb("argmax")
    annealed = pred.rgb("annealed-mean")
    assert argmax.shape == annealed.shape == (1, 3, *photo.shape[:2])
    assert not torch.allclose(argmax, annealed)


def test_annealed_mean_tends_to_argmax_at_low_temperature(small_model):
    logits = torch.randn(1, small_model.num_classes, 4, 4, generator=torch.Generator().manual_seed(0)) * 100
    hot = decode_ab(logits, small_model.classes, Decoding("annealed-mean", temperature=1e-3))
    assert torch.allclose(hot, decode_ab(logits, small_model.classes, "argmax"), atol=1e-3)


def test_confident_decoding_mutes_the_hue_the_network_is_unsure_of():
    from ccc_nodes.core.classes import ColorClasses
    from ccc_nodes.core.settings import CONFIDENT_FULL

    classes = ColorClasses(bin_size=6)  # every bin: centres all around the a*b* plane
    c = classes.centers

    def nearest(a, b):
        return int(((c - torch.tensor([a, b])) ** 2).sum(1).argmin())

    red, red2, blue, grey = nearest(40, 5), nearest(40, 18), nearest(-5, -40), nearest(0, 0)
    hue = torch.rad2deg(torch.atan2(c[:, 1], c[:, 0]))
    assert abs(hue[red] - hue[red2]) < 30 and abs(hue[red] - hue[blue]) > 90

    def logits_for(probs):  # one pixel per case; log p as logits, the rest of the classes near 0 probability
        x = torch.full((1, classes.K, 1, len(probs)), -30.0)
        for j, p in enumerate(probs):
            for k, v in p.items():
                x[0, k, 0, j] = math.log(v)
        return x

    cases = [{red: 0.5, red2: 0.4, blue: 0.1},  # sure of the hue (0.9 on reds): full chroma
             {red: 0.4, blue: 0.35, grey: 0.25},  # 0.4 on red's hue: chroma x 0.4 / 0.6
             {grey: 0.5, red: 0.3, blue: 0.2}]  # a neutral argmax is kept as it is
    ab = decode_ab(logits_for(cases), classes, "confident")[0, :, 0]  # (2, 3)
    argmax = decode_ab(logits_for(cases), classes, "argmax")[0, :, 0]
    torch.testing.assert_close(ab[:, 0], argmax[:, 0])
    torch.testing.assert_close(ab[:, 1], argmax[:, 1] * 0.4 / CONFIDENT_FULL, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ab[:, 2], argmax[:, 2])
    torch.testing.assert_close(argmax[:, 1], c[red])


def test_join_lab_upsamples_ab_and_keeps_L():
    L = torch.full((1, 1, 40, 60), 60.0)
    ab = torch.zeros(1, 2, 10, 15)
    rgb = join_lab(L, ab)
    assert rgb.shape == (1, 3, 40, 60)
    assert torch.allclose(rgb_to_lab(rgb)[:, 0], L[:, 0], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(37, 53), (224, 224), (301, 7)])
def test_strips_give_the_whole_image_result(shape):
    # Full-resolution conversions go in strips (bounded memory); each strip upsamples its
    # own rows of ab, which must agree with F.interpolate over the whole image.
    from ccc_nodes.core.prediction import lightness

    torch.manual_seed(0)
    H, W = shape
    L, ab = torch.rand(2, 1, H, W) * 100, torch.randn(2, 2, 9, 11) * 40
    whole = join_lab(L, ab, strip_pixels=H * W)
    assert torch.allclose(join_lab(L, ab, strip_pixels=3 * W), whole, atol=1e-5)
    assert torch.allclose(join_lab(L, ab, strip_pixels=1), whole, atol=1e-5)  # one row at a time
    rgb = np.random.default_rng(0).random((H, W, 3), dtype=np.float32)
    assert torch.allclose(lightness(rgb, strip_pixels=2 * W), lightness(rgb, strip_pixels=H * W), atol=1e-4)


def test_bad_inputs_are_clear_errors(small_model, photo):
    with pytest.raises(ValueError, match="multiple of 32"):
        Colorizer(small_model, size=100)
    with pytest.raises(ValueError, match="decode"):
        Colorizer(small_model, decoding="mean")
    with pytest.raises(ValueError, match="temperature"):
        Colorizer(small_model, decoding=Decoding("annealed-mean", 0.0))
    col = Colorizer(small_model, device="cpu", size=64, max_pixels=10_000)
    with pytest.raises(ImageError, match="over the limit"):
        col(photo)
    with pytest.raises(ImageError, match="shape"):
        col(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageError, match="cannot read"):
        col(object())


def test_float_arrays_outside_zero_one_are_refused_not_clipped(small_model, photo):
    col = Colorizer(small_model, device="cpu", size=64)
    with pytest.raises(ImageError, match=r"\[0, 1\].*divide 0\.\.255 data by 255"):
        col(photo.astype(np.float32))  # 0..255 floats: all white if clipped
    assert col(photo.astype(np.float32) / 255 * 1.005).shape == photo.shape  # resampling overshoot is fine


@pytest.mark.slow
def test_max_pixels_is_the_one_limit(tmp_path):
    from ccc_nodes.core.images import open_image

    between = tmp_path / "95mp.png"
    Image.new("1", (10000, 9500)).save(between)  # over Pillow's 89 MP warning, under our 100 MP
    assert open_image(between).size == (10000, 9500)
    with pytest.raises(ImageError, match="over the limit of 50 MP"):
        open_image(between, max_pixels=50_000_000)
    beyond = tmp_path / "182mp.png"
    Image.new("1", (14000, 13000)).save(beyond)  # over Pillow's 179 MP refusal
    with pytest.raises(ImageError, match="refused"):
        open_image(beyond)
    guard = Image.MAX_IMAGE_PIXELS
    assert open_image(beyond, max_pixels=0).size == (14000, 13000)  # 0: no limit, as asked
    assert guard == Image.MAX_IMAGE_PIXELS  # Pillow's guard is back for everyone else


def test_decompression_bomb_file_is_refused(tmp_path, small_model):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)  # 144 MP, a few kB on disk
    with pytest.raises(ImageError, match="refused"):
        Colorizer(small_model, device="cpu", size=64)(str(path))



def test_class_map_picture_is_the_bin_centre_at_constant_L():
    from ccc_nodes.core.classes import ColorClasses
    from ccc_nodes.core.prediction import class_map_rgb

    classes = ColorClasses(6, kept=[666, 18 * 36 + 30])  # a*b* (3, 3) and (75, 3)
    pic = class_map_rgb(torch.tensor([[[0, 1]]]), classes, size=(4, 6), lightness=60.0)
    assert pic.shape == (1, 3, 4, 6)
    lab = rgb_to_lab(pic)
    assert torch.allclose(lab[0, 0, :, :3], torch.full((4, 3), 60.0), atol=0.05)  # in gamut: L exact
    assert torch.allclose(lab[0, 1:, :, :3].mean(dim=(1, 2)), torch.tensor([3.0, 3.0]), atol=0.1)
    assert lab[0, 1, :, 3:].mean() > 60  # the red class on the right half, nearest-upsampled


def test_run_is_the_whole_job_and_colorize_is_its_picture(small_model, photo):
    col = Colorizer(small_model, device="cpu", size=64)
    plain = col.run(photo)
    assert plain.harmonized is None and plain.masks is None and plain.notes == []
    assert plain.rgb.shape == (1, 3, *photo.shape[:2])
    assert torch.equal(plain.class_map, plain.prediction.class_map)
    assert np.array_equal(col(photo), plain.image(photo))  # colorize is run's picture, to the byte
    # harmonisation: masks from the settings' source; without SAM, "auto" falls back and says so
    auto = col.run(photo, harmonization=Harmonization())
    assert auto.masks is not None and auto.masks.source.startswith("classical")
    assert "no SAM model was given" in auto.notes[0] and "Harmonised with classical" in auto.notes[-1]
    assert auto.class_map.shape == (1, *auto.masks.size)  # the harmonised map, at the masks' size
    # given masks replace the source, and alone imply harmonisation with the defaults
    half = np.zeros(photo.shape[:2], bool)
    half[:, : photo.shape[1] // 2] = True
    given = col.run(photo, masks=half[None])
    assert given.masks.source == "given" and len(given.masks) == 1
    assert given.harmonized.params == Harmonization().thresholds
    # the decoding of the call overrides the Colorizer's
    annealed = col.run(photo, decoding="annealed-mean")
    assert annealed.decoding == Decoding("annealed-mean") and not torch.allclose(annealed.rgb, plain.rgb)
    two = col.run([photo, photo], masks=[None, half[None]])
    assert two[0].harmonized is None and two[1].masks.source == "given"
    with pytest.raises(ValueError, match="1 lists of masks for 2 images"):
        col.run([photo, photo], masks=[half[None]])


def test_settings_refuse_bad_values_in_words():
    with pytest.raises(ValueError, match="mask source"):
        Harmonization("SAM")
    with pytest.raises(ValueError, match="dominance"):
        Harmonization(dominance=1.5)
    with pytest.raises(ValueError, match="points_per_side"):
        Harmonization(points_per_side=0)
    with pytest.raises(TypeError, match="decoding"):
        Decoding.of(0.38)
    assert Decoding.of(None) == Decoding() and Decoding.of("confident") == Decoding()  # the default mode
    assert Decoding.of("argmax") == Decoding("argmax")
