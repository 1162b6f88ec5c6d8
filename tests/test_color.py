import numpy as np
import pytest
import torch
from skimage import color

from ccc_nodes.core.color import lab_to_rgb, linear_to_srgb, rgb_to_L, rgb_to_lab, srgb_to_linear


def _grid(n=64):
    v = np.linspace(0, 1, n)
    r, g, b = np.meshgrid(v, v, v, indexing="ij")
    return np.stack([r, g, b], -1).reshape(n, n * n, 3)  # an "image" of n^3 sRGB colours


def test_rgb_to_lab_matches_skimage_on_dense_grid():
    rgb = _grid()
    ref = color.rgb2lab(rgb)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1).float()).permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-3


def test_rgb_to_L_is_the_L_of_rgb_to_lab():
    rgb = torch.from_numpy(_grid(32)).permute(2, 0, 1).float()
    ref = color.rgb2lab(_grid(32))[..., 0]
    assert torch.allclose(rgb_to_L(rgb), rgb_to_lab(rgb)[:1], atol=1e-4)
    assert np.abs(rgb_to_L(rgb)[0].double().numpy() - ref).max() < 1e-3
    assert rgb_to_L(torch.rand(2, 3, 3, 5, 7)).shape == (2, 3, 1, 5, 7)  # any leading dims


def test_lab_to_rgb_matches_skimage_on_dense_grid():
    lab = color.rgb2lab(_grid())
    ref = color.lab2rgb(lab)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-3


def test_lab_to_rgb_matches_skimage_out_of_gamut():
    L, a, b = np.meshgrid(np.linspace(0, 100, 21), np.linspace(-110, 110, 23), np.linspace(-110, 110, 23), indexing="ij")
    lab = np.stack([L, a, b], -1).reshape(21, -1, 3)
    ref = color.lab2rgb(lab)
    ours = lab_to_rgb(torch.from_numpy(lab).permute(2, 0, 1).float()).permute(1, 2, 0).double().numpy()
    assert np.abs(ours - ref).max() < 1e-3


def test_batched_shapes_and_float64():
    x = torch.rand(2, 4, 3, 5, 7, dtype=torch.float64)
    lab = rgb_to_lab(x)
    assert lab.shape == x.shape and lab.dtype == torch.float64
    assert torch.allclose(lab_to_rgb(lab), x, atol=1e-6)
    assert rgb_to_L(x).shape == (2, 4, 1, 5, 7)


def test_bad_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\)"):
        rgb_to_lab(torch.rand(4, 5, 5))


# ---------------------------------------------------------------- the named steps change nothing
# The conversions as they were written before they were split into named steps (a 3x3
# inverse per call, the sRGB transfer inlined): the steps must give the same numbers.
_M = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_W = (0.95047, 1.0, 1.08883)


def _old_rgb_to_lab(rgb):
    x = rgb.clamp(0.0, 1.0)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", torch.tensor(_M, dtype=torch.float64).to(x.dtype), linear)
    t = xyz / torch.tensor(_W, dtype=x.dtype).view(3, 1, 1)
    f = torch.where(t > 0.008856, t.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def _old_lab_to_rgb(lab):
    L, a, b = lab.unbind(-3)
    fy = (L + 16.0) / 116.0
    f = torch.stack((a / 500.0 + fy, fy, (fy - b / 200.0).clamp_min(0.0)), dim=-3)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / 7.787) * torch.tensor(_W, dtype=lab.dtype).view(3, 1, 1)
    m = torch.linalg.inv(torch.tensor(_M, dtype=torch.float64)).to(lab.dtype)
    linear = torch.einsum("ij,...jhw->...ihw", m, xyz)
    srgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp_min(1e-12) ** (1.0 / 2.4) - 0.055, 12.92 * linear)
    return srgb.clamp(0.0, 1.0)


def _old_rgb_to_L(rgb):
    x = rgb.clamp(0.0, 1.0)
    linear = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    y = torch.einsum("j,...jhw->...hw", torch.tensor(_M[1], dtype=torch.float64).to(x.dtype), linear).unsqueeze(-3)
    return 116.0 * torch.where(y > 0.008856, y.clamp_min(1e-12) ** (1.0 / 3.0), 7.787 * y + 16.0 / 116.0) - 16.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_named_steps_give_the_old_formulas_outputs(dtype):
    rgb = torch.from_numpy(_grid(48)).permute(2, 0, 1).to(dtype)
    rgb = torch.cat((rgb, torch.rand(3, 7, rgb.shape[-1], dtype=dtype, generator=torch.Generator().manual_seed(0))), 1)
    assert (rgb_to_lab(rgb) - _old_rgb_to_lab(rgb)).abs().max() <= 1e-6 * 100  # L a b span ~100: 1e-6 relative
    assert (rgb_to_L(rgb) - _old_rgb_to_L(rgb)).abs().max() <= 1e-6 * 100
    L, a, b = torch.meshgrid(torch.linspace(0, 100, 21), torch.linspace(-120, 120, 25), torch.linspace(-120, 120, 25),
                             indexing="ij")
    lab = torch.stack((L, a, b)).reshape(3, 21, -1).to(dtype)  # in and out of gamut
    assert (lab_to_rgb(lab) - _old_lab_to_rgb(lab)).abs().max() <= 1e-6
    assert torch.equal(rgb_to_lab(rgb), _old_rgb_to_lab(rgb)) and torch.equal(lab_to_rgb(lab), _old_lab_to_rgb(lab))


def test_srgb_transfer_steps_invert_each_other():
    x = torch.linspace(0, 1, 10001, dtype=torch.float64).view(1, 1, -1)
    assert (linear_to_srgb(srgb_to_linear(x)) - x).abs().max() < 1e-12
    assert srgb_to_linear(torch.tensor(0.5)).item() == pytest.approx(0.214041, abs=1e-6)  # the sRGB standard's value


def test_constants_made_under_inference_mode_still_take_gradients():
    from ccc_nodes.core import color as C

    C._constant.cache_clear()
    with torch.inference_mode():
        rgb_to_lab(torch.rand(3, 4, 4, dtype=torch.float64))  # the first call on this dtype makes its constants
    x = torch.rand(3, 4, 4, dtype=torch.float64, requires_grad=True)
    lab_to_rgb(rgb_to_lab(x)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
