"""Pictures for the Space, drawn from the core's own objects (no stored figures).

- :func:`class_grid`: the G x G a*b* bin grid (METHOD.md s. 2-4, paper Fig. of Eq. 9-12),
  each bin coloured by its centre, the model's kept classes marked.
- :func:`bin_table`: paper Table II (class count and quantisation error per bin size),
  measured by encoding and decoding a dense a*b* sampling.
- :func:`class_map_picture`: a predicted class map, each class shown as its bin centre.

Shapes follow the project: classes ``(1, h, w)``, RGB arrays ``(H, W, 3)`` in [0, 1].
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from ccc_nodes import ColorClasses
from ccc_nodes.core.color import lab_to_rgb
from ccc_nodes.core.prediction import class_map_rgb

__all__ = ["bin_table", "class_grid", "class_map_picture", "to_uint8"]

PREVIEW_L = 65.0  # lightness class colours are shown at: bright enough for every hue


def to_uint8(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """RGB ``(H, W, 3)`` in [0, 1] -> uint8 ``(H, W, 3)`` (contiguous; rounded half to even).
    Done in torch, in place after one copy: a 24 MP photo takes a fraction of a second."""
    x = rgb.detach().cpu() if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.asarray(rgb))
    x = x.float().clamp(0.0, 1.0).mul_(255.0).round_()
    return x.to(torch.uint8).contiguous().numpy()


def _ab_to_rgb(ab: torch.Tensor, L: float = PREVIEW_L) -> np.ndarray:
    """a*b* ``(2, h, w)`` at a constant L -> RGB ``(h, w, 3)`` in [0, 1] (clipped to gamut)."""
    lab = torch.cat((torch.full_like(ab[:1], L), ab.float()))[None]
    return lab_to_rgb(lab)[0].permute(1, 2, 0).numpy()


def class_grid(classes: ColorClasses, L: float = PREVIEW_L) -> Image.Image:
    """The a*b* bin grid coloured by bin centre; bins outside the kept set are faded
    and the kept set is outlined. a* runs left to right, b* bottom to top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G, s = classes.grid, classes.bin_size
    q = torch.arange(G * G)
    ab = classes.bin_centers(q).T.reshape(2, G, G)  # rows = b*, columns = a* (Eq. 9)
    colours = _ab_to_rgb(ab, L)
    kept = np.zeros(G * G, dtype=bool)
    kept[classes.kept.numpy()] = True
    kept = kept.reshape(G, G)
    shown = np.where(kept[..., None], colours, 0.25 * colours + 0.75)  # dropped bins faded
    lo, hi = -classes.shift, classes.shift
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=100)
    ax.imshow(shown, origin="lower", extent=(lo, hi, lo, hi), interpolation="nearest")
    centers = np.linspace(lo + s / 2, hi - s / 2, G)
    ax.contour(centers, centers, kept.astype(float), levels=[0.5], colors="black", linewidths=0.8)
    ax.set_xlabel("a*")
    ax.set_ylabel("b*")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def bin_table(bin_sizes: tuple[int, ...] = (4, 6, 8, 10, 12, 14), step: float = 0.25) -> list[list]:
    """Paper Table II, measured: for each bin size, G, the class count G^2, and the
    largest and mean per-channel error |x - decode(encode(x))| over an a*b* grid with
    the given step, starting on a bin edge (expected: s/2 and s/4 for bin centres,
    Eq. 10-11; ``step`` must divide the bin sizes for the mean to be exact)."""
    rows = []
    for s in bin_sizes:
        classes = ColorClasses(bin_size=s)
        axis = torch.arange(-classes.shift, classes.shift, step)
        b, a = torch.meshgrid(axis, axis, indexing="ij")
        ab = torch.stack((a, b))  # (2, H, W)
        err = (classes.decode(classes.encode(ab)) - ab).abs()
        rows.append([s, classes.grid, classes.num_bins, round(err.max().item(), 2), round(err.mean().item(), 2)])
    return rows


def class_map_picture(
    class_map: torch.Tensor, classes: ColorClasses, size: tuple[int, int], L: float = PREVIEW_L
) -> np.ndarray:
    """Class map ``(1, h, w)`` -> uint8 RGB ``(H, W, 3)``: each class as its bin centre at
    a constant L, resized (nearest) to ``size = (H, W)`` so it lines up with the photo.
    For a page, pass the display size: drawing at a large photo's own size is slow."""
    return to_uint8(class_map_rgb(class_map.cpu(), classes, size, L)[0].permute(1, 2, 0))
