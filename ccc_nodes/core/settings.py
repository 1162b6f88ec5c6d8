"""The settings of a colorization job, each default written once.

Every interface reads its defaults from here: the ``ccc`` flags, the node widgets, the
Space controls and the Python API (:meth:`ccc_nodes.Colorizer.run`). Plain Python, no
torch: ``ccc --help`` reads these without importing the network's libraries.

    Decoding()                         # argmax, the paper's (Eq. 17-18)
    Decoding("annealed-mean", 0.38)    # Zhang et al. 2016
    Harmonization()                    # masks from SAM when a model is given, else classical
    Harmonization("classical", dominance=0.5)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CONFIDENT_FULL",
    "CONFIDENT_SECTORS",
    "DECODE_MODES",
    "HARMONIZE_CHOICES",
    "INPUT_SIZE",
    "MASK_SOURCES",
    "MAX_HINTS",
    "PRECISIONS",
    "SAM_MODEL_TYPES",
    "SIZE_MULTIPLE",
    "Decoding",
    "Harmonization",
    "check_size",
    "harmonization_for",
]

SIZE_MULTIPLE = 32  # the encoder's output stride: the network's input sides are multiples of it
INPUT_SIZE = 224  # the network's square input (the paper's)
DECODE_MODES = ("argmax", "annealed-mean", "confident")
# "confident" decoding: the argmax colour keeps its chroma where at least CONFIDENT_FULL of the
# probability lies on hues near its own (its 30-degree sector and the two beside it, of
# CONFIDENT_SECTORS), and is muted in proportion below that: a muted right colour rather than
# a vivid guess where the network hesitates between hues (pipeline.decode_ab).
CONFIDENT_FULL = 0.6
CONFIDENT_SECTORS = 12
# "auto": bf16 (else fp16) on a CUDA GPU, fp16 on MPS, fp32 on the CPU (pipeline.resolve_precision).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Where object masks come from: SAM's automatic masks, a classical segmentation of L, or
# "auto": SAM when a model is given, else classical (and the result's notes say so).
MASK_SOURCES = ("auto", "sam", "classical")
# SAM's architectures (segment-anything's registry names); the first is the default.
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
# What a user picks for harmonisation: off, or the mask source (CLI flags, Space radio).
HARMONIZE_CHOICES = ("off", "sam", "classical")
# The most colour hints one image takes, whatever the interface (CLI, Space, nodes, server, the
# Python API; enforced by ccc_nodes.steps.hints): every point is grown over the image and every hint
# pools the logits, so work and memory grow with the count (5,000 hints held a Space worker 88 s,
# 50,000 took 3.3 GB). A person places a few tens; more is refused in words before any work.
MAX_HINTS = 100


def check_size(size: object, name: str = "size") -> int:
    """The network input size, or ValueError: a positive multiple of :data:`SIZE_MULTIPLE`
    (the encoder's stride). ``name``: what the message calls it (``"--size"`` for a CLI flag)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise ValueError(f"{name} must be a positive multiple of {SIZE_MULTIPLE}, got {size!r}")
    return size


@dataclass(frozen=True)
class Decoding:
    """How class logits become a*b* (METHOD.md s. 8).

    Attributes:
      mode: ``"argmax"``, the bin centre of the most probable class (the paper),
        ``"annealed-mean"``, the mean of the centres under softmax(logits / T), or
        ``"confident"``, the argmax centre muted where the network is unsure of its hue
        (:data:`CONFIDENT_FULL`).
      temperature: T of the annealed mean (Zhang et al. 2016: 0.38); unused by argmax.
    """

    mode: str = "confident"  # it met the rule for a new default with the least wrong hue (training/README.md)
    temperature: float = 0.38

    def __post_init__(self) -> None:
        if self.mode not in DECODE_MODES:
            raise ValueError(f"decode mode must be one of {DECODE_MODES}, got {self.mode!r}")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool) \
                or not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        object.__setattr__(self, "temperature", float(self.temperature))

    @classmethod
    def of(cls, value: Decoding | str | None) -> Decoding:
        """A Decoding from itself, a mode name (default temperature) or None (the default)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        raise TypeError(f"decoding must be a Decoding or a mode name {DECODE_MODES}, got {type(value).__name__}")

    def describe(self) -> str:
        """In words: ``argmax`` or ``annealed-mean (T = 0.38)``."""
        return f"{self.mode} (T = {self.temperature:g})" if self.mode == "annealed-mean" else self.mode


@dataclass(frozen=True)
class Harmonization:
    """Object-selective colour harmonisation (METHOD.md s. 9, Algorithm 1).

    Attributes:
      masks: where the object masks come from, one of :data:`MASK_SOURCES` (masks given
        to the job replace this).
      min_area: skip masks smaller than this fraction of the image (0..1, not pixels).
      dominance: a mask is harmonised when its most frequent class holds this share of it.
      max_dev: pixels whose a*b* lies farther than this from the mode class's centre are
        replaced.
      sigma: Gaussian feathering of the replaced region, in pixels.
      points_per_side: SAM's prompt grid (points_per_side^2 prompts; SAM's own default 32).
      sam_options: further options of SAM's automatic mask generator (e.g.
        ``pred_iou_thresh``); SAM's own defaults where absent.
    """

    masks: str = "auto"
    min_area: float = 0.002
    dominance: float = 0.3
    max_dev: float = 12.0
    sigma: float = 1.0
    points_per_side: int = 32
    sam_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks not in MASK_SOURCES:
            raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {self.masks!r}")
        for name, lo, hi in (("min_area", 0.0, 1.0), ("dominance", 0.0, 1.0), ("max_dev", 0.0, None),
                             ("sigma", 0.0, None)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v < lo or (hi is not None and v > hi):
                bounds = f"in [{lo:g}, {hi:g}]" if hi is not None else f">= {lo:g}"
                raise ValueError(f"{name} must be a number {bounds}, got {v!r}")
            object.__setattr__(self, name, float(v))
        if not isinstance(self.points_per_side, int) or isinstance(self.points_per_side, bool) \
                or self.points_per_side < 1:
            raise ValueError(f"points_per_side must be a positive integer, got {self.points_per_side!r}")

    @property
    def thresholds(self) -> dict[str, float]:
        """The four numbers of Algorithm 1 (what :func:`ccc_nodes.steps.harmonize.harmonize` takes)."""
        return {"min_area": self.min_area, "dominance": self.dominance, "max_dev": self.max_dev, "sigma": self.sigma}

    def as_dict(self) -> dict:
        return asdict(self)



def harmonization_for(choice: str | None, **thresholds) -> Harmonization | None:
    """A user's harmonisation choice (:data:`HARMONIZE_CHOICES`) -> settings, or None for off."""
    if choice is None or choice == "off":
        return None
    if choice not in HARMONIZE_CHOICES:
        raise ValueError(f"harmonisation must be one of {HARMONIZE_CHOICES}, got {choice!r}")
    return Harmonization(choice, **thresholds)
