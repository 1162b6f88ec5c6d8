"""The optimiser, its learning-rate schedule and the weight average (the model evaluated and saved)."""

from __future__ import annotations

import argparse
import math

import torch

EMA_DECAY = 0.999  # --ema default: at most 0.999, reached after ~10k steps of the 3/4-power warm-up
EMA_WARMUP_POWER = 3 / 4  # decay at step t: 1 - (1 + t)^-3/4 (0.98 at step 200, 0.998 at 4k)


def adam(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> torch.optim.Adam:
    # fused on GPU: one kernel over all parameter tensors (373 for the paper network)
    betas = tuple(float(b) for b in str(args.betas).split(","))
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=betas,
                            fused=device.type == "cuda")


def lr_at(step: int, frac: float, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay over the run (``frac`` = share of it done) or constant.

    Over very short runs a constant rate gave the more colourful model (see the embedded
    default's model card); cosine is the default for full-length training."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    return base * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


def weight_average(model: torch.nn.Module, decay: float):
    """timm's ``ModelEmaV3`` of ``model`` (parameters and buffers) with the warm-up
    ``min(decay, 1 - (1 + t)^-3/4)`` at step t, so short runs average over their last
    steps rather than their start; None when ``decay`` is 0."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
