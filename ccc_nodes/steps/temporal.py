"""Temporal mode: colorize a sequence of frames with stable colour (METHOD.md s. 14).

Frame by frame, the argmax of each pixel's class distribution jumps between neighbouring
classes from one frame to the next. Here the class probabilities of the previous frames
are carried along the motion and blended with the current frame's where the motion is
trusted::

    p_t    = softmax(logits_t)                                   # this frame alone
    q_t    = (1 - c m_t) p_t + c m_t warp(q_{t-1}, flow_t->t-1)  # carried, where reliable
    ab_t   = decode_ab(log q_t)                                   # argmax / annealed mean

``flow_t->t-1`` is dense optical flow (OpenCV's DIS, or Farneback) computed on the
lightness the network sees; ``m_t`` in [0, 1] is the share of each logit cell whose flow
passes the forward-backward check; at a scene cut ``q_t = p_t`` (the carry is reset).
A :class:`TemporalState` is the step: the job (:meth:`~ccc_nodes.job.colorizer.Colorizer.run`
with ``sequence=state``) carries each frame's prediction through it before hints, a
reference and harmonisation, so a clip takes every step a photo takes;
:func:`~ccc_nodes.job.sequence.colorize_sequence` runs a clip through the job in batches,
holding only one batch and the carried state ``q_{t-1}`` ``(1, K, h, w)``, however long
the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ccc_nodes.core.extras import install_hint
from ccc_nodes.core.prediction import Prediction

__all__ = [
    "FLOW_METHODS",
    "TEMPORAL_DEFAULTS",
    "OpenCVMissing",
    "TemporalSettings",
    "TemporalState",
    "WarpingError",
    "flow_pair",
    "optical_flow",
    "reliable",
    "require_cv2",
    "warp",
]

FLOW_METHODS = ("dis", "farneback")
OPENCV_HINT = install_hint("video", "temporal mode (OpenCV)")


class OpenCVMissing(ImportError):
    """OpenCV (the optical flow) is not installed; the message names the extra."""


@dataclass(frozen=True)
class TemporalSettings:
    """How the temporal mode carries colour classes along the motion.

    Arguments:
      carry: weight ``c`` of the warped previous distribution where the flow is fully
        reliable (0: frame by frame; towards 1: the first frame's colours are kept).
      flow: ``"dis"`` (OpenCV's DIS, medium preset) or ``"farneback"``.
      fb_alpha, fb_beta: forward-backward check (Sundaram et al. 2010): a pixel's flow is
        reliable if ``|f + b|^2 <= fb_alpha (|f|^2 + |b|^2) + fb_beta`` (pixels of the
        flow image, which is the network's input size).
      cut_histogram: a scene cut when the lightness histograms (32 bins) of two frames
        differ by more than this total variation distance (0..1).
      cut_reliable: ... or when less than this share of the pixels has a reliable flow.
    """

    carry: float = 0.7
    flow: str = "dis"
    fb_alpha: float = 0.01
    fb_beta: float = 0.5
    cut_histogram: float = 0.4
    cut_reliable: float = 0.25

    def __post_init__(self):
        if not 0.0 <= self.carry < 1.0:
            raise ValueError(f"carry must lie in [0, 1), got {self.carry}")
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"flow must be one of {FLOW_METHODS}, got {self.flow!r}")
        if not 0.0 <= self.cut_histogram <= 1.0 or not 0.0 <= self.cut_reliable <= 1.0:
            raise ValueError("cut_histogram and cut_reliable must lie in [0, 1]")


TEMPORAL_DEFAULTS = TemporalSettings()


def require_cv2():
    try:
        import cv2
    except ImportError as e:
        raise OpenCVMissing(OPENCV_HINT) from e
    return cv2


# ------------------------------------------------------------------ flow (numpy, one channel uint8)
def optical_flow(src: np.ndarray, dst: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow ``(H, W, 2)`` (x, y) with ``src(p) ~ dst(p + flow(p))``, from two grey
    uint8 images ``(H, W)``."""
    cv2 = require_cv2()
    src, dst = np.ascontiguousarray(src, np.uint8), np.ascontiguousarray(dst, np.uint8)  # DIS needs contiguous rows
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(src, dst, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(src, dst, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise ValueError(f"flow must be one of {FLOW_METHODS}, got {method!r}")


def _grid(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (of the frame the flow points into) sampled at ``p + flow(p)``, bilinear;
    ``(H, W)`` or ``(H, W, C)`` float32."""
    mx, my = _grid(flow)
    return require_cv2().remap(image.astype(np.float32), mx, my, interpolation=1, borderMode=1)  # linear, replicate


def reliable(backward: np.ndarray, forward: np.ndarray, alpha: float = 0.01, beta: float = 0.5) -> np.ndarray:
    """Forward-backward check -> bool ``(H, W)``: ``backward`` maps frame t into t-1,
    ``forward`` maps t-1 into t; a pixel of t is reliable if going there and back lands
    where it started (Sundaram et al. 2010) and it stays inside the frame."""
    fw = warp(forward, backward)
    mx, my = _grid(backward)
    h, w = backward.shape[:2]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    loop = ((backward + fw) ** 2).sum(-1)
    return inside & (loop <= alpha * ((backward**2).sum(-1) + (fw**2).sum(-1)) + beta)


def flow_pair(prev: np.ndarray, cur: np.ndarray, method: str = "dis") -> tuple[np.ndarray, np.ndarray]:
    """(backward: cur -> prev, forward: prev -> cur) flows of two grey uint8 frames."""
    return optical_flow(cur, prev, method), optical_flow(prev, cur, method)


def _histogram(grey: np.ndarray) -> np.ndarray:
    h = np.bincount((grey >> 3).ravel(), minlength=32).astype(np.float64)
    return h / h.sum()


# ------------------------------------------------------------------ carrying the classes
def _flow_image(L: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Full-resolution L ``(1, 1, H, W)`` -> grey uint8 ``size`` (the network's view)."""
    small = F.interpolate(L.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return (small[0, 0] * 2.55).round().clamp(0, 255).to(torch.uint8).numpy()


def _to_cells(x: np.ndarray, cells: tuple[int, int]) -> torch.Tensor:
    """``(H, W, C)`` on the flow image -> ``(1, C, h, w)`` averaged over each logit cell."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
    return F.adaptive_avg_pool2d(t, cells)


def _warp_cells(q: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Distribution ``(1, K, h, w)`` sampled at each cell centre + ``flow`` ``(1, 2, h, w)``
    (in cells), bilinear."""
    h, w = q.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    gx = (2 * (xs + flow[0, 0]) + 1) / w - 1
    gy = (2 * (ys + flow[0, 1]) + 1) / h - 1
    grid = torch.stack((gx, gy), dim=-1)[None]
    return F.grid_sample(q, grid, mode="bilinear", padding_mode="border", align_corners=False)


@dataclass
class TemporalState:
    """The carried class distribution of a sequence, updated frame by frame (``step``).

    Attributes:
      settings: the :class:`TemporalSettings`.
      cuts: indices of the frames where the carry was reset (0 is the first frame).
      reliable_share: the share of the last frame's pixels whose flow was reliable (1.0 at
        the first frame; only the last is kept, so the state does not grow with the clip).
    """

    settings: TemporalSettings = TEMPORAL_DEFAULTS
    cuts: list[int] = field(default_factory=list)
    reliable_share: float = 1.0
    _q: torch.Tensor | None = field(default=None, init=False, repr=False)  # q_{t-1}
    _grey: np.ndarray | None = field(default=None, init=False, repr=False)  # the previous flow image
    _frames: int = field(default=0, init=False, repr=False)

    def step(self, pred: Prediction) -> torch.Tensor:
        """This frame's prediction -> the blended logits ``log q_t`` ``(1, K, h, w)``."""
        s = self.settings
        cells = tuple(pred.logits.shape[-2:])
        grey = _flow_image(pred.L, (cells[0] * 4, cells[1] * 4))
        p = torch.softmax(pred.logits.float(), dim=1)
        index, self._frames = self._frames, self._frames + 1
        prev, self._grey = self._grey, grey
        if self._q is None or self._q.shape != p.shape or prev is None or prev.shape != grey.shape:
            return self._reset(index, pred, p, 1.0)
        if s.carry == 0.0:
            return self._reset(index, pred, p, 1.0, cut=False)
        if 0.5 * np.abs(_histogram(grey) - _histogram(prev)).sum() > s.cut_histogram:
            return self._reset(index, pred, p, 0.0)
        backward, forward = flow_pair(prev, grey, s.flow)
        ok = reliable(backward, forward, s.fb_alpha, s.fb_beta)
        share = float(ok.mean())
        if share < s.cut_reliable:
            return self._reset(index, pred, p, share)
        scale = np.array([cells[1] / grey.shape[1], cells[0] / grey.shape[0]], dtype=np.float32)
        flow = _to_cells(backward * scale, cells)
        m = _to_cells(ok[..., None], cells)
        q = (1 - s.carry * m) * p + s.carry * m * _warp_cells(self._q, flow)
        self._q = q / q.sum(dim=1, keepdim=True)
        self.reliable_share = share
        return self._q.clamp_min(1e-12).log()

    def carried(self, pred: Prediction) -> Prediction:
        """This frame's prediction with the previous frames' classes carried in (:meth:`step`)."""
        return replace(pred, logits=self.step(pred))

    def _reset(self, index: int, pred: Prediction, p: torch.Tensor, share: float, cut: bool = True) -> torch.Tensor:
        """Start again from this frame alone: its own logits, exactly as frame by frame."""
        self._q = p
        self.reliable_share = share
        if cut:
            self.cuts.append(index)
        return pred.logits


class WarpingError:
    """Temporal warping error of a colorized sequence (METHOD.md s. 14): the mean over
    frames t >= 1 and the pixels whose flow is reliable of ``|ab_t(p) - ab_{t-1}(p + b(p))|``
    (Euclidean in a*b*), with the flow ``b`` from frame t into t-1 computed on the *ground
    truth's* grey frames (so the method under test does not choose its own motion).

    ``update(rgb, grey)`` per frame, in order: rgb ``(H, W, 3)`` float in [0, 1], grey
    uint8 ``(H, W)``; ``reset()`` between clips; ``compute()`` -> the mean.
    """

    def __init__(self, method: str = "dis", alpha: float = 0.01, beta: float = 0.5):
        self.method, self.alpha, self.beta = method, alpha, beta
        self.total, self.count = 0.0, 0
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray] | None = None

    def motion(self, prev_grey: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(backward flow, reliable mask) between two grey frames; ``update`` takes it to
        score several colorizations of one clip with one flow."""
        backward, forward = flow_pair(prev_grey, grey, self.method)
        return backward, reliable(backward, forward, self.alpha, self.beta)

    def update(self, rgb: np.ndarray, grey: np.ndarray, motion: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        from ccc_nodes.core.color import rgb_to_lab

        ab = rgb_to_lab(torch.as_tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None])[0, 1:]
        ab = ab.permute(1, 2, 0).numpy()
        if self._prev is not None:
            prev_ab, prev_grey = self._prev
            backward, ok = motion if motion is not None else self.motion(prev_grey, grey)
            diff = np.sqrt(((ab - warp(prev_ab, backward)) ** 2).sum(-1))
            self.total += float(diff[ok].sum())
            self.count += int(ok.sum())
        self._prev = (ab, grey)

    def compute(self) -> float:
        return self.total / max(self.count, 1)
