import numpy as np
import pytest
import torch
from skimage import color

from ccc_nodes.color import lab_to_rgb, rgb_to_L, rgb_to_lab


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
