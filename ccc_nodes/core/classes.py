"""The a*b* colour classes of CCC++ (METHOD.md sections 2-4; paper Eq. 9-12).

``ColorClasses`` is the codec between a*b* values and class indices ``0..K-1``. A bin
grid of ``G x G`` bins of size ``s`` covers the a*b* plane (``G = 2*ceil(108/s)``,
shift ``G*s/2``); a *kept set* of bins (those frequent enough in a reference data set)
becomes the K classes, and every dropped bin maps to its nearest kept bin. The kept set
is part of a model and travels in its config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "OUTPUT_SCALE",
    "PAPER_MIN_COUNT",
    "PAPER_MIN_FRACTION",
    "PAPER_SAMPLES",
    "ColorClasses",
    "ab_at_output",
    "classes_at_output",
    "grid_size",
    "min_count",
]

# The network's class map is 1/4 of its input per side (Table IV's decoder output).
OUTPUT_SCALE = 4

# Paper: classes with at least 500 samples out of 109,885,440 (35,040 images x 56 x 56).
PAPER_MIN_COUNT = 500
PAPER_SAMPLES = 109_885_440
PAPER_MIN_FRACTION = PAPER_MIN_COUNT / PAPER_SAMPLES


def min_count(min_fraction: float, total: int) -> int:
    """The smallest whole number of samples a kept bin needs: ``min_fraction`` of ``total``,
    rounded up. The product is rounded to 6 decimals first, so a fraction written as
    ``n / total`` asks for exactly ``n`` (500 / 109,885,440 x 109,885,440 is
    500.00000000000006 in floating point, which would otherwise ask for 501)."""
    return max(1, math.ceil(round(min_fraction * total, 6)))


def ab_at_output(lab: torch.Tensor, scale: int = OUTPUT_SCALE) -> torch.Tensor:
    """L*a*b* ``(B, 3, H, W)`` -> its a*b* area-averaged to the network's output
    resolution ``(B, 2, H/scale, W/scale)``: the colour one output cell stands for
    (METHOD.md section 6). The one rule of the training targets, the class histogram and
    the class metrics."""
    ab = lab[:, 1:]
    return F.avg_pool2d(ab, scale) if scale > 1 else ab


def classes_at_output(lab: torch.Tensor, classes: ColorClasses, scale: int = OUTPUT_SCALE) -> torch.Tensor:
    """L*a*b* ``(B, 3, H, W)`` -> class map ``(B, H/scale, W/scale)``: :func:`ab_at_output`
    encoded with ``classes`` (a training target; the class map TAR, CNR, CCAR compare)."""
    return classes.encode(ab_at_output(lab, scale))


def grid_size(bin_size: int) -> int:
    """Bins per a*/b* axis for a bin size (Table II: 2*ceil(108/s))."""
    return 2 * math.ceil(108 / bin_size)


class ColorClasses:
    """Codec between a*b* and the K kept colour classes.

    Arguments:
      bin_size: edge of a square a*b* bin, 4..14 (the paper uses 6).
      kept: indices ``q`` (0..G^2-1) of the kept bins; ``None`` keeps all G^2 bins.
        Stored sorted and unique; class ``k`` is the k-th kept bin in ascending q.
    """

    def __init__(self, bin_size: int = 6, kept: Iterable[int] | None = None):
        if not isinstance(bin_size, int) or not 4 <= bin_size <= 14:
            raise ValueError(f"bin_size must be an integer in 4..14, got {bin_size!r}")
        self.bin_size = bin_size
        self.grid = grid_size(bin_size)
        self.shift = self.grid * bin_size / 2
        n = self.grid**2
        kept_list = list(range(n)) if kept is None else sorted({int(q) for q in kept})
        if not kept_list:
            raise ValueError("kept must name at least one bin")
        if kept_list[0] < 0 or kept_list[-1] >= n:
            raise ValueError(f"kept bins must lie in 0..{n - 1} for bin_size {bin_size}")
        self.kept = torch.tensor(kept_list, dtype=torch.long)
        self.centers = self.bin_centers(self.kept)  # (K, 2) a*b* of each class
        self.lut = self._nearest_kept()  # (G^2,) bin -> class
        self._device_cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ----------------------------------------------------------------- basics
    @property
    def num_bins(self) -> int:
        """G^2, the number of bins before folding (Table II's class count)."""
        return self.grid**2

    @property
    def K(self) -> int:  # noqa: N802 - the paper's name
        """Number of kept classes."""
        return int(self.kept.numel())

    def __len__(self) -> int:
        return self.K

    def __repr__(self) -> str:
        return f"ColorClasses(bin_size={self.bin_size}, K={self.K} of {self.num_bins})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ColorClasses)
            and other.bin_size == self.bin_size
            and torch.equal(other.kept, self.kept)
        )

    def bin_centers(self, q: torch.Tensor) -> torch.Tensor:
        """Bin indices ``(*)`` -> a*b* bin centres ``(*, 2)`` (Eq. 10-11)."""
        s = self.bin_size
        a = s * (q % self.grid) - self.shift + s / 2
        b = s * torch.div(q, self.grid, rounding_mode="floor") - self.shift + s / 2
        return torch.stack((a, b), dim=-1).float()

    def _nearest_kept(self) -> torch.Tensor:
        # A single assignment step with fixed centroids; argmin returns the first
        # minimum, so ties go to the lower kept index (METHOD.md section 4).
        all_centers = self.bin_centers(torch.arange(self.num_bins))
        d = torch.cdist(all_centers.double(), self.centers.double())
        return d.argmin(dim=1)

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._device_cache:
            self._device_cache[device] = (self.lut.to(device), self.centers.to(device))
        return self._device_cache[device]

    # ----------------------------------------------------------------- codec
    def quantize(self, ab: torch.Tensor) -> torch.Tensor:
        """a*b* ``(*, 2, H, W)`` -> bin index q ``(*, H, W)`` in 0..G^2-1 (Eq. 9)."""
        if ab.dim() < 3 or ab.shape[-3] != 2:
            raise ValueError(f"ab must have shape (*, 2, H, W), got {tuple(ab.shape)}")
        idx = torch.floor((ab.float() + self.shift) / self.bin_size).long().clamp_(0, self.grid - 1)
        ia, ib = idx.unbind(-3)
        return ib * self.grid + ia

    def encode(self, ab: torch.Tensor) -> torch.Tensor:
        """a*b* ``(*, 2, H, W)`` -> class ``(*, H, W)`` in 0..K-1 (Eq. 9 then Eq. 12)."""
        lut, _ = self._on(ab.device)
        return lut[self.quantize(ab)]

    def decode(self, classes: torch.Tensor) -> torch.Tensor:
        """Class ``(*, H, W)`` -> a*b* bin centre ``(*, 2, H, W)`` (Eq. 17-18)."""
        _, centers = self._on(classes.device)
        return centers[classes].movedim(-1, -3)

    # ----------------------------------------------------------------- kept set
    def histogram(self, ab: torch.Tensor) -> torch.Tensor:
        """Counts of each of the G^2 bins over a*b* ``(*, 2, H, W)`` (int64, on CPU)."""
        q = self.quantize(ab).flatten()
        return torch.bincount(q, minlength=self.num_bins).cpu()

    @classmethod
    def from_histogram(
        cls,
        counts: torch.Tensor | Sequence[int],
        bin_size: int = 6,
        min_fraction: float = PAPER_MIN_FRACTION,
    ) -> ColorClasses:
        """Keep the bins holding at least ``min_fraction`` of all samples (Eq. 12).

        ``counts`` is a G^2 histogram, e.g. summed from :meth:`histogram` over a data
        set whose images are resized so their class map is 56x56. Counts are compared,
        as integers, with :func:`min_count`: with the paper's fraction and sample count a
        bin with exactly 500 samples is kept.
        """
        counts = torch.as_tensor(counts).flatten()
        if counts.is_floating_point():
            if not torch.equal(counts, counts.round()):
                raise ValueError("histogram counts must be whole numbers of samples")
            counts = counts.long()
        n = grid_size(bin_size) ** 2
        if counts.numel() != n:
            raise ValueError(f"histogram has {counts.numel()} bins; bin_size {bin_size} needs {n}")
        total = int(counts.sum())
        if total <= 0:
            raise ValueError("histogram is empty: no samples to choose classes from")
        kept = torch.nonzero(counts >= min_count(min_fraction, total)).flatten()
        if kept.numel() == 0:  # a tiny data set: keep at least the most frequent bin
            kept = counts.argmax().view(1)
        return cls(bin_size=bin_size, kept=kept.tolist())

    # ----------------------------------------------------------------- config
    def to_config(self) -> dict:
        return {"bin_size": self.bin_size, "kept": self.kept.tolist()}

    @classmethod
    def from_config(cls, config: dict) -> ColorClasses:
        return cls(bin_size=int(config["bin_size"]), kept=config.get("kept"))
