"""Command-line flags two commands share: harmonisation's (``ccc colorize`` and ``ccc evaluate``)."""

from __future__ import annotations

import argparse

from ccc_nodes.core.settings import HARMONIZE_CHOICES, SAM_MODEL_TYPES, Harmonization, harmonization_for

__all__ = ["add_harmonization_flags", "harmonization_args"]


def add_harmonization_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--harmonize`` (``what`` it does), SAM's checkpoint and the thresholds, their defaults
    :class:`~ccc_nodes.core.settings.Harmonization`'s (``ccc colorize`` and ``ccc evaluate``)."""
    d = Harmonization()
    p.add_argument("--harmonize", default="off", choices=HARMONIZE_CHOICES,
                   help=f"{what} (default off; sam and classical need the 'sam' extra)")
    p.add_argument("--sam", metavar="CKPT", help="SAM checkpoint: a .pth file or a Hub repo id (for --harmonize sam)")
    p.add_argument("--sam-type", default=SAM_MODEL_TYPES[0], choices=SAM_MODEL_TYPES, help="SAM architecture of --sam")
    p.add_argument("--points-per-side", type=int, default=d.points_per_side,
                   help=f"SAM automatic mask generator grid (default {d.points_per_side})")
    for name, about in (("min_area", "skip masks under this fraction of the image (not pixels)"),
                        ("dominance", "the mode class must hold this fraction of a mask"),
                        ("max_dev", "a*b* distance from the mode beyond which pixels are replaced"),
                        ("sigma", "feathering in pixels")):
        default = getattr(d, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=default, help=f"{about} (default {default:g})")


def harmonization_args(args: argparse.Namespace) -> Harmonization | None:
    """The settings the harmonisation flags give (None for off); ValueError in words."""
    return harmonization_for(args.harmonize, min_area=args.min_area, dominance=args.dominance, max_dev=args.max_dev,
                             sigma=args.sigma, points_per_side=args.points_per_side)
