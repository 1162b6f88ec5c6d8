"""Class-rebalanced loss of CCC++ (METHOD.md sections 6-7; paper Eq. 13-16).

Per-pixel cross-entropy over the K classes, each pixel weighted by the weight of its
true class, summed and divided by the number of pixels. Three weightings:

* ``ccc``  - per-batch weights of Eq. 15 (reconstructed, METHOD.md section 7);
* ``none`` - all ones (the paper's "nobalance" ablation);
* ``cic``  - Zhang et al. (2016): ``((1-lambda) * prior + lambda/K)^-1`` from whole-data
  statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REBALANCING", "RebalancedLoss", "ccc_weights", "cic_weights"]

REBALANCING = ("ccc", "none", "cic")


def ccc_weights(counts: torch.Tensor, p: float = 10.0, floor: float = 1.0) -> torch.Tensor:
    """Per-batch class weights (Eq. 15, reconstructed).

    ``counts`` ``(K,)``: pixels of each true class in the batch. With ``m = p/100 *
    max(counts)``, ``w_q = (N_max + m) / (max(n_q, floor) + m)``, rescaled so the mean
    weight per pixel is 1. The most frequent class gets the smallest weight; the ratio
    of any two weights is at most ``(100 + p) / p``.
    """
    if p <= 0:
        raise ValueError(f"p must be a positive percentage, got {p}")
    n = counts.double()
    n_max = n.max()
    m = (p / 100.0) * n_max
    w = (n_max + m) / (n.clamp_min(floor) + m)
    total = n.sum()
    w = w / ((n * w).sum() / total)
    # No Python branch on a tensor value: this runs every training step, and reading a
    # GPU scalar back to the host would stall the step. An empty batch gets all ones.
    return torch.where(total > 0, w, torch.ones_like(w)).float()


def cic_weights(
    counts: torch.Tensor,
    lam: float = 0.5,
    centers: torch.Tensor | None = None,
    sigma: float = 5.0,
) -> torch.Tensor:
    """Whole-data rebalancing weights of Zhang et al. (2016).

    ``counts`` ``(K,)``: class counts over the training set. If ``centers`` ``(K, 2)``
    (a*b* of each class) is given, the prior is smoothed with a Gaussian of ``sigma``
    a*b* units, as in that paper. Weights are normalised so the expected weight under
    the prior is 1.
    """
    prior = counts.double() / counts.double().sum().clamp_min(1.0)
    if centers is not None:
        d2 = torch.cdist(centers.double(), centers.double()) ** 2
        kernel = torch.exp(-d2 / (2 * sigma**2))
        prior = kernel @ prior
        prior = prior / prior.sum()
    K = prior.numel()
    w = 1.0 / ((1 - lam) * prior + lam / K)
    w = w / (prior * w).sum()
    return w.float()


class RebalancedLoss(nn.Module):
    """Weighted per-pixel cross-entropy (Eq. 13-16).

    Arguments:
      mode: ``"ccc"`` (default), ``"none"`` or ``"cic"``.
      p: the percentage of Eq. 15 for ``ccc`` (paper: 10; 4 vivid, 16 softer).
      class_counts: ``(K,)`` whole-data class counts, required for ``cic``.
      centers: ``(K, 2)`` a*b* class centres, smooths the ``cic`` prior when given.
    """

    def __init__(
        self,
        mode: str = "ccc",
        p: float = 10.0,
        class_counts: torch.Tensor | None = None,
        centers: torch.Tensor | None = None,
        lam: float = 0.5,
    ):
        super().__init__()
        if mode not in REBALANCING:
            raise ValueError(f"rebalancing must be one of {REBALANCING}, got {mode!r}")
        self.mode, self.p = mode, p
        fixed = None
        if mode == "cic":
            if class_counts is None:
                raise ValueError("cic rebalancing needs whole-data class_counts")
            fixed = cic_weights(torch.as_tensor(class_counts), lam=lam, centers=centers)
        self.register_buffer("fixed_weights", fixed, persistent=False)

    def weights(self, target: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Class weights ``(K,)`` for a batch of targets ``(B,h,w)``."""
        if self.mode == "none":
            return torch.ones(num_classes, device=target.device)
        if self.mode == "cic":
            return self.fixed_weights.to(target.device)
        counts = torch.bincount(target.flatten(), minlength=num_classes)
        return ccc_weights(counts, p=self.p)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits ``(B,K,h,w)``, target classes ``(B,h,w)`` -> scalar loss."""
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        with torch.no_grad():
            w = self.weights(target, logits.shape[1])[target]
        return (ce * w).sum() / target.numel()
