"""Metrics (METHOD.md section 10) against hand-computed cases and reference
implementations (scikit-image SSIM, torchmetrics' LPIPS, scipy's matrix square root)."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import need
from torch import nn

from ccc_nodes import ColorClasses
from ccc_nodes.core.color import lab_to_rgb
from ccc_nodes.core.metrics import (
    LPIPS,
    PSNR_MAX,
    ColorMetrics,
    FeatureStats,
    MetricUnavailable,
    TapFeatures,
    colorfulness,
    colorfulness_abs,
    compare,
    frechet_distance,
    grid_profile,
    grid_ratio,
    grid_sums,
    load_fid_features,
    load_lpips,
    markdown_table,
    metric_classes,
    mse,
    psnr,
    ssim,
    uiqi,
    wrong_color_counts,
)


def flat(rgb, h=16, w=16):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, h, w).clone()


def test_mse_psnr_by_hand():
    a, b = flat((0.5, 0.5, 0.5)), flat((0.6, 0.6, 0.6))
    assert mse(a, b).item() == pytest.approx(0.01, abs=1e-6)
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-3)


def test_psnr_has_one_convention_for_identical_images():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=g)
    b = a.clone()
    b[1] = (b[1] + 0.1).clamp(0, 1)
    direct = psnr(a, b)
    assert direct[0].item() == pytest.approx(PSNR_MAX) == pytest.approx(100.0)  # not +inf
    assert direct[1].item() == pytest.approx(10 * math.log10(1 / mse(a[1:], b[1:]).item()), rel=1e-6)
    m = ColorMetrics(CLASSES)
    m.update(a, b)
    assert m.compute()["psnr"] == pytest.approx(direct.mean().item(), rel=1e-6)  # the set means the same numbers
    assert compare(a[0], a[0], CLASSES)["psnr"] == pytest.approx(PSNR_MAX)


@pytest.mark.slow
def test_metric_classes_are_the_models_else_the_embedded_defaults():
    from ccc_nodes.core.hub import DEFAULT_MODEL_DIR, load_model

    kept = len(json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())["kept"])
    default, note = metric_classes()
    assert default == load_model(None).classes and kept == default.K  # read from config.json alone
    assert "embedded default model" in note and f"K = {kept}" in note
    assert metric_classes(CLASSES) == (CLASSES, "class maps (TAR, CNR, CCAR) use the model's classes (K = 10)")


def test_colorfulness_by_hand():
    img = torch.zeros(1, 3, 4, 4)
    img[:, 0, :, :2] = 1.0  # left half pure red
    img[:, 1, :, 2:] = 1.0  # right half pure green
    # rg = R - G is +-255 (mean 0, std 255); yb = (R + G) / 2 - B is 127.5 (std 0):
    # CF = sqrt(255^2 + 0) + 0.3 * sqrt(0 + 127.5^2) = 293.25
    assert colorfulness(img).item() == pytest.approx(293.25, abs=1e-3)
    assert colorfulness(flat((0.3, 0.3, 0.3))).item() == pytest.approx(0.0, abs=1e-4)


def test_ssim_matches_scikit_image():
    from skimage import data
    from skimage.metrics import structural_similarity

    a = data.astronaut()[100:164, 150:230] / 255.0
    b = np.clip(a + np.random.default_rng(0).normal(0, 0.08, a.shape), 0, 1)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=2)
    t = lambda x: torch.tensor(x).permute(2, 0, 1)[None]  # noqa: E731
    assert ssim(t(a), t(b)).item() == pytest.approx(ref, abs=1e-5)
    assert ssim(t(a), t(a)).item() == pytest.approx(1.0, abs=1e-6)


def test_uiqi_by_hand():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 8, 8, generator=g) * 0.4 + 0.2  # one 8x8 window per channel
    # y = x + c: s_xy = s_x^2 = s_y^2, so Q = 2 m_x m_y / (m_x^2 + m_y^2).
    y = x + 0.2
    mx, my = x.double().mean(dim=(2, 3)), y.double().mean(dim=(2, 3))
    expect = (2 * mx * my / (mx**2 + my**2)).mean()
    assert uiqi(x, y).item() == pytest.approx(float(expect), abs=1e-6)
    assert uiqi(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert uiqi(x, 1 - x).item() < 0  # anti-correlated
    assert uiqi(x, flat((0.5, 0.5, 0.5), 8, 8)).item() == pytest.approx(0.0, abs=1e-6)  # no correlation with a flat image
    assert uiqi(flat((0.5, 0.5, 0.5), 8, 8), flat((0.5, 0.5, 0.5), 8, 8)).item() == 1.0  # the authors' flat case


# ---------------------------------------------------------------- TAR, CNR, CCAR
KEPT = [666, 667, 668, 702, 703, 630, 631, 665, 701, 632]  # bins around a* = b* = 0
CLASSES = ColorClasses(6, kept=KEPT)


def image_of(cmap: torch.Tensor) -> torch.Tensor:
    """sRGB image whose 4x4 blocks have the bin centres of the class map ``(h, w)``."""
    ab = CLASSES.decode(cmap).repeat_interleave(4, -2).repeat_interleave(4, -1)[None]
    return lab_to_rgb(torch.cat((torch.full_like(ab[:, :1], 50.0), ab), dim=1))


def test_tar_cnr_ccar_by_hand():
    c = torch.tensor
    p1, g1 = c([[0, 1], [2, 3]]), c([[0, 1], [1, 4]])  # 2 of 4 agree; 4 classes vs 3
    p2, g2 = c([[5, 5], [5, 5]]), c([[5, 5], [6, 7]])  # 2 of 4 agree; 1 class vs 3
    m = ColorMetrics(CLASSES)
    m.update(image_of(p1)[:, :, :, :], image_of(g1))
    m.update(image_of(p2), image_of(g2))
    r = m.compute()
    assert r["images"] == 2
    assert r["tar"] == pytest.approx(100 * (2 / 4 + 2 / 4) / 2)  # Eq. 21
    assert r["cnr"] == pytest.approx((4 / 3 + 1 / 3) / 2)  # Eq. 19
    assert r["ccar"] == pytest.approx(100 * 5 / 10)  # classes 0-3, 5 of K = 10 (Eq. 20)
    assert r["ccar_gt"] == pytest.approx(100 * 6 / 10)  # 0, 1, 4, 5, 6, 7
    assert r["mse"] > 0 and r["ssim"] < 1


def test_streaming_equals_one_batch_and_old_keys_remain():
    g = torch.Generator().manual_seed(1)
    pred, gt = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    one = ColorMetrics(CLASSES)
    one.update(pred, gt)
    two = ColorMetrics(CLASSES)
    two.update(pred[:1], gt[:1])
    two.update(pred[1:], gt[1:])
    a, b = one.compute(), two.compute()
    for k in ("mse", "psnr", "cf", "cf_gt", "delta_cf", "tar", "cnr", "ccar", "ccar_gt", "images", "ssim", "uiqi"):
        assert a[k] == pytest.approx(b[k], rel=1e-5), k
    assert math.isnan(ColorMetrics(CLASSES).compute()["mse"])
    single = compare(pred[0], gt[0], CLASSES)
    assert single["images"] == 1 and single["mse"] == pytest.approx(mse(pred[:1], gt[:1]).item())


# ---------------------------------------------------------------- LPIPS
def constant_for(s):
    """The [0, 1] colour whose LPIPS-scaled value is ``s`` (per channel)."""
    shift, scale = torch.tensor([-0.030, -0.088, -0.188]), torch.tensor([0.458, 0.448, 0.450])
    return tuple(((torch.tensor(s) * scale + shift + 1) / 2).tolist())


def test_lpips_arithmetic_by_hand():
    # Features = the scaled image itself; unit-normalised over channels at each pixel.
    lp = LPIPS(TapFeatures(nn.Sequential(nn.Identity()), taps=(0,)), [torch.tensor([0.2, 0.3, 0.5])])
    x, y = flat(constant_for((0.8, 0.0, 0.0))), flat(constant_for((0.0, 0.5, 0.0)))
    # Unit vectors (1,0,0) and (0,1,0): d = 0.2 * 1^2 + 0.3 * 1^2 + 0.5 * 0 = 0.5.
    assert lp(x, y).item() == pytest.approx(0.5, abs=1e-5)
    # Same direction, other length: normalisation makes them equal.
    assert lp(x, flat(constant_for((0.4, 0.0, 0.0)))).item() == pytest.approx(0.0, abs=1e-6)
    # Layers add: two taps of the same features double it.
    two = LPIPS(TapFeatures(nn.Sequential(nn.Identity(), nn.Identity()), taps=(0, 1)), [torch.tensor([0.2, 0.3, 0.5])] * 2)
    assert two(x, y).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_lpips_loader_matches_torchmetrics_on_the_same_weights(tmp_path):
    """The real loading code (AlexNet + the v0.1 linear layers) on a random AlexNet: the
    same numbers as torchmetrics' LPIPS with that backbone."""
    tm = need("torchmetrics.functional.image.lpips")
    torch.manual_seed(0)
    ref = tm._LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()  # random backbone, real linear layers
    state = {}
    for sl in (ref.net.slice1, ref.net.slice2, ref.net.slice3, ref.net.slice4, ref.net.slice5):
        for name, p in sl.state_dict().items():
            state[f"features.{name}"] = p  # slices keep torchvision's layer indices
    torch.save(state, tmp_path / "alex.pth")
    ours = load_lpips(backbone=tmp_path / "alex.pth")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    expect = ref(a, b, normalize=True).flatten()
    assert torch.allclose(ours(a, b), expect, rtol=1e-4, atol=1e-6)
    m = ColorMetrics(CLASSES, lpips=ours)
    m.update(a, b)
    assert m.compute()["lpips"] == pytest.approx(expect.mean().item(), rel=1e-4)


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(MetricUnavailable, match=r"AlexNet.*alexnet-owt-7be5be79\.pth"):
        load_lpips(backbone=tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth")
    with pytest.raises(MetricUnavailable, match="missing"):
        load_fid_features(tmp_path / "inception.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a network")
    with pytest.raises(MetricUnavailable, match="TorchScript"):
        load_fid_features(tmp_path / "junk.pt")


# ---------------------------------------------------------------- FID
def test_frechet_distance_by_hand():
    mu1, cov1 = torch.tensor([0.0, 0.0]), torch.diag(torch.tensor([1.0, 4.0]))
    mu2, cov2 = torch.tensor([1.0, 2.0]), torch.diag(torch.tensor([4.0, 1.0]))
    # |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr(sqrt(cov1 cov2)) = 5 + 5 + 5 - 2 * (2 + 2) = 7
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(7.0, abs=1e-9)
    assert frechet_distance(mu1, cov1, mu1, cov1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_scipy_and_streams():
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    fa = torch.randn(300, 16, generator=g, dtype=torch.float64) @ torch.randn(16, 16, generator=g, dtype=torch.float64)
    fb = torch.randn(300, 16, generator=g, dtype=torch.float64) + 0.5
    sa, sb = FeatureStats(), FeatureStats()
    for i in range(0, 300, 64):  # streamed in batches
        sa.update(fa[i : i + 64])
        sb.update(fb[i : i + 64])
    mu_a, cov_a = sa.mean_cov()
    assert torch.allclose(cov_a, torch.cov(fa.T), atol=1e-8) and torch.allclose(mu_a, fa.mean(0))
    # The classic reference formula (pytorch-fid): scipy's matrix square root.
    a, b = fa.numpy(), fb.numpy()
    m1, m2, c1, c2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(c1 @ c2).real
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean)
    assert frechet_distance(*sa.mean_cov(), *sb.mean_cov()) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats().mean_cov()


@pytest.mark.slow
def test_fid_in_the_set_metrics_with_a_small_feature_network(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    scripted = torch.jit.script(net)
    scripted.save(str(tmp_path / "feat.pt"))
    feats = load_fid_features(tmp_path / "feat.pt", size=32)  # the real TorchScript loading path
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(6, 3, 32, 32, generator=g)
    same = ColorMetrics(CLASSES, fid=feats)
    same.update(gt[:3], gt[:3])
    same.update(gt[3:], gt[3:])
    assert same.compute()["fid"] == pytest.approx(0.0, abs=1e-6)
    off = ColorMetrics(CLASSES, fid=feats)
    off.update((gt * 0.5).clamp(0, 1), gt)
    assert off.compute()["fid"] > 1e-4
    one = ColorMetrics(CLASSES, fid=feats)
    one.update(gt[:1], gt[:1])
    assert math.isnan(one.compute()["fid"])


def test_markdown_table_writes_na():
    table = markdown_table({"model": {"mse": 0.01234, "psnr": 20.0}}, names=("mse", "psnr", "lpips"))
    lines = table.splitlines()
    assert lines[0] == "| | MSE | PSNR | LPIPS |"
    assert lines[2] == "| model | 0.0123 | 20.00 | n/a |"


# ------------------------------------------------------------------ grid ratio
def _blocks(g, n=4, cells=7, period=8):
    """a*b* maps painted as Table IV paints them: one value per encoder cell, nearest x8."""
    return F.interpolate(torch.randn(n, 2, cells, cells, generator=g) * 20, scale_factor=period, mode="nearest")


def _smooth(g, n=4, size=56):
    """Smooth a*b* fields with no preferred grid: bicubic through 9x9 random values."""
    return F.interpolate(torch.randn(n, 2, 9, 9, generator=g) * 20, size=(size, size), mode="bicubic", align_corners=True)


def test_grid_ratio_tells_blocks_from_smooth_maps():
    g = torch.Generator().manual_seed(0)
    blocks = _blocks(g)
    assert (grid_ratio(blocks) > 100).all()  # all change sits on the grid lines
    noisy = blocks + torch.randn(blocks.shape, generator=g) * 3
    assert (grid_ratio(noisy) > 1.5).all()
    blurred = F.avg_pool2d(F.pad(blocks, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert (grid_ratio(blurred) > 1.5).all()
    assert grid_ratio(_smooth(g)).sub(1).abs().max() < 0.1
    assert grid_ratio(torch.randn(4, 2, 56, 56, generator=g)).sub(1).abs().max() < 0.1  # white noise
    assert grid_ratio(torch.zeros(2, 2, 56, 56)).tolist() == [1.0, 1.0]  # flat: no change anywhere
    # the same blocks shifted off the grid by half a cell are no longer on its lines
    assert (grid_ratio(blocks[..., 4:52, 4:52]) < 0.5).all()


def test_grid_sums_count_every_neighbour_pair_once():
    ab = torch.zeros(1, 2, 10, 17)
    s = grid_sums(ab)
    # horizontal: 10 rows x 16 pairs, of which the pairs (7, 8) and (15, 16) are on lines;
    # vertical: 17 columns x 9 pairs, of which (7, 8) is on a line
    assert s[0, 1].item() == 10 * 2 + 17 * 1 and s[0, 1] + s[0, 3] == 10 * 16 + 17 * 9
    ab[:, 0, :, 8:] = 5.0  # one step of 5 across the line between columns 7 and 8
    s = grid_sums(ab)
    assert s[0, 0].item() == pytest.approx(5.0 * 10) and s[0, 2].item() == 0
    with pytest.raises(ValueError, match="crosses no line"):
        grid_sums(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 2, h, w\)"):
        grid_sums(torch.zeros(2, 8, 8))


@pytest.mark.slow
def test_color_metrics_report_the_grid_ratio_at_model_resolution():
    g = torch.Generator().manual_seed(1)
    L = torch.full((4, 1, 224, 224), 60.0)
    ab_blocks = F.interpolate(_blocks(g), scale_factor=4, mode="bilinear", align_corners=False)  # as decode_ab upsamples
    ab_smooth = F.interpolate(_smooth(g), scale_factor=4, mode="bilinear", align_corners=False)
    blocky = lab_to_rgb(torch.cat((L, ab_blocks), 1)).clamp(0, 1)
    smooth = lab_to_rgb(torch.cat((L, ab_smooth), 1)).clamp(0, 1)
    m = ColorMetrics(ColorClasses(6))
    m.update(blocky, smooth)
    r = m.compute()
    assert r["grid"] > 1.5 and abs(r["grid_gt"] - 1) < 0.15
    # a 224 px network's prediction scored at 256 px: the grid is found again at 56 cells
    up = F.interpolate(blocky, size=(256, 256), mode="bilinear", align_corners=False)
    m256 = ColorMetrics(ColorClasses(6), model_size=224)
    m256.update(up, up)
    assert m256.compute()["grid"] > 1.5
    misplaced = ColorMetrics(ColorClasses(6))  # taken at 64 cells, the 8-cell grid is missed
    misplaced.update(up, up)
    assert misplaced.compute()["grid"] < m256.compute()["grid"] - 0.5
    tiny = ColorMetrics(ColorClasses(6))
    tiny.update(blocky[:, :, :32, :32], smooth[:, :, :32, :32])  # 8x8 cells: no grid line inside
    assert math.isnan(tiny.compute()["grid"])


def test_grid_profile_shows_where_changes_sit():
    g = torch.Generator().manual_seed(2)
    two = F.interpolate(torch.randn(2, 2, 28, 28, generator=g), scale_factor=2, mode="nearest")  # nearest x2 last
    sums, counts = grid_profile(two)
    p = sums / counts
    assert (p[1::2] == 0).all() and (p[0::2] > 0.5).all()
    s_all = grid_sums(two).sum(0)  # entry 0 is the grid lines, the rest is everything else
    assert sums[0].item() == pytest.approx(s_all[0].item()) and counts[0].item() == s_all[1].item()
    assert sums[1:].sum().item() == pytest.approx(s_all[2].item()) and counts[1:].sum().item() == s_all[3].item()


# ------------------------------------------------------------------ wrong colour, literature forms
def lab_image(*columns):
    """sRGB (1, 3, 4, 4 * len(columns)): one 4x4 block per (L, a*, b*), left to right."""
    lab = torch.cat([torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 4, 4) for c in columns], dim=3)
    return lab_to_rgb(lab)


def test_wrong_hue_false_colour_and_washed_by_hand():
    # truth / output per block (L 60; chroma and hue from a*, b*):
    #   1: (20, 0) hue 0 / (0, 20) hue 90: both coloured, 90 degrees apart -> wrong hue
    #   2: (20, 0) / (19, 6) hue 17.5: both coloured, near -> counted, right
    #   3: (2, 1) C* 2.2 neutral / (18, 0): false colour
    #   4: (2, 1) neutral / (10, 0) C* 10 < 15: counted, not false colour
    #   5: (25, 10) C* 26.9 / (3, 2) C* 3.6: washed (and not counted for hue: output C* < 12)
    #   6: (25, 10) / (8, 0) C* 8 >= 6: counted for washed, not washed; not for hue
    # washed counts blocks 1 and 2 too (truth C* 20 >= 15, painted): 1 of 4 blocks
    gt = lab_image((60, 20, 0), (60, 20, 0), (60, 2, 1), (60, 2, 1), (60, 25, 10), (60, 25, 10))
    pred = lab_image((60, 0, 20), (60, 19, 6), (60, 18, 0), (60, 10, 0), (60, 3, 2), (60, 8, 0))
    n = 16  # pixels per block
    counts = {k: v[0].tolist() for k, v in wrong_color_counts(pred, gt).items()}
    assert counts == {"wrong_hue": [2 * n, n], "false_color": [2 * n, n], "washed": [4 * n, n]}
    m = compare(pred, gt, CLASSES)
    assert (m["wrong_hue"], m["false_color"], m["washed"]) == pytest.approx((50.0, 50.0, 25.0))
    assert compare(gt, gt, CLASSES)["wrong_hue"] == 0.0


def test_hue_difference_wraps_around_the_circle():
    # hues 350 and 20 degrees are 30 apart, not 330: right; 350 and 60 are 70 apart: wrong
    def ab(deg, c=30.0):
        return (60, c * math.cos(math.radians(deg)), c * math.sin(math.radians(deg)))

    gt = lab_image(ab(350), ab(350))
    pred = lab_image(ab(20), ab(60))
    assert wrong_color_counts(pred, gt)["wrong_hue"][0].tolist() == [32, 16]


def test_wrong_colour_is_pooled_over_the_set_and_na_without_counted_pixels():
    # image 1: 2 blocks counted for hue, 1 wrong; image 2: 2 blocks counted, none wrong -> 1 of 4 = 25 %
    gt = torch.cat([lab_image((60, 20, 0), (60, 20, 0)), lab_image((60, 20, 0), (60, 0, 20))])
    pred = torch.cat([lab_image((60, 0, 20), (60, 20, 0)), lab_image((60, 20, 0), (60, 0, 20))])
    m = ColorMetrics(CLASSES)
    m.update(pred[:1], gt[:1])
    m.update(pred[1:], gt[1:])
    assert m.compute()["wrong_hue"] == pytest.approx(25.0)
    grey = lab_image((50, 0, 0))
    out = compare(grey, grey, CLASSES)
    assert math.isnan(out["wrong_hue"]) and math.isnan(out["washed"]) and out["false_color"] == 0.0
    assert "wrong hue %" in markdown_table({"x": out}) and "n/a" in markdown_table({"x": out})


def test_absolute_opponent_colourfulness_by_hand():
    # two pixels (255 scale) (110, 100, 105) and (100, 110, 105): rg = +10 and -10, yb = 0.
    # Signed: std rg 10, means 0 -> CF 10. Absolute: |rg| = 10, 10: std 0, mean 10 -> 0.3 * 10 = 3
    img = torch.tensor([[110.0, 100.0], [100.0, 110.0], [105.0, 105.0]]).view(1, 3, 1, 2) / 255
    assert colorfulness(img).item() == pytest.approx(10.0, abs=1e-3)
    assert colorfulness_abs(img).item() == pytest.approx(3.0, abs=1e-3)


def test_set_level_delta_cf_beside_the_per_image_one():
    # pred CF 10 and 0, truth CF 0 and 10 (the pixels above, and a flat grey):
    # per image |10 - 0| = 10 twice -> 10; set |mean 5 - mean 5| = 0
    colour = torch.tensor([[110.0, 100.0], [100.0, 110.0], [105.0, 105.0]]).view(1, 3, 1, 2) / 255
    grey = torch.full((1, 3, 1, 2), 105.0 / 255)
    m = ColorMetrics(CLASSES, scale=1)
    m.update(torch.cat([colour, grey]), torch.cat([grey, colour]))
    out = m.compute()
    assert out["delta_cf"] == pytest.approx(10.0, abs=1e-3)
    assert out["delta_cf_set"] == pytest.approx(0.0, abs=1e-3)
    assert out["cf_abs"] == pytest.approx(1.5, abs=1e-3) and out["delta_cf_abs"] == pytest.approx(0.0, abs=1e-3)


def test_fid_torchvision_mode_loads_torchvisions_inception_from_the_hub_cache(tmp_path, monkeypatch):
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MetricUnavailable, match=r"inception_v3_google-0cc3c7bd\.pth"):
        load_fid_features(mode="torchvision")
    torch.save(net.state_dict(), cache / "inception_v3_google-0cc3c7bd.pth")
    feats = load_fid_features(mode="torchvision")  # the real loading path, from torch's hub cache
    rgb = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    got = feats(rgb)
    # by hand: 299 px bilinear, ImageNet-normalised, transform_input, pool features (fc dropped)
    net.fc = nn.Identity()
    net.transform_input = True
    x = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = net.eval()((x - mean) / std)
    assert got.shape == (2, 2048)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="FID mode"):
        load_fid_features(mode="pytorch")


def test_compare_takes_the_ground_truth_in_the_form_a_user_has(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    gt_u8 = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    pred = torch.from_numpy(np.clip(gt_u8.astype(np.float32) / 255 + 0.05, 0, 1)).permute(2, 0, 1)[None]
    want = compare(pred, torch.from_numpy(gt_u8).permute(2, 0, 1)[None].float() / 255, CLASSES)
    Image.fromarray(gt_u8).save(tmp_path / "gt.png")
    for gt in (Image.fromarray(gt_u8), gt_u8, torch.from_numpy(gt_u8).permute(2, 0, 1).float() / 255, tmp_path / "gt.png"):
        got = compare(pred, gt, CLASSES)
        assert got["psnr"] == pytest.approx(want["psnr"], abs=1e-4) and got["tar"] == pytest.approx(want["tar"])
    assert compare(pred[0], Image.fromarray(gt_u8), CLASSES)["psnr"] == pytest.approx(want["psnr"], abs=1e-4)
    with pytest.raises(ValueError, match="differ in shape"):
        compare(pred, Image.fromarray(gt_u8).resize((24, 16)), CLASSES)
