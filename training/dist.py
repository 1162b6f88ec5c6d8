"""Distributed data parallel, switched on purely by torchrun's environment (nanoGPT style).

    torchrun --standalone --nproc-per-node 8 -m training.train ...   # DDP on 8 GPUs
    python -m training.train ...                                     # one process

Under torchrun ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` are set; each rank trains
on its own shard of the data, gradients are averaged by DDP, and only rank 0 logs,
evaluates and saves. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Dist", "setup", "shard"]


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is true on any (e.g. "time is up")."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> tuple[Dist, str]:
    """Start the process group if torchrun launched us. Returns (Dist, device string):
    under DDP with CUDA each rank takes ``cuda:LOCAL_RANK``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), device
    d = Dist(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    use_cuda = (torch.cuda.is_available() and device in ("auto", "cuda")) or device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
        device = f"cuda:{d.local_rank}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return d, device


def shard(items: list, d: Dist) -> list:
    """This rank's share: every ``world``-th item from ``rank`` (disjoint, covering)."""
    return items[d.rank :: d.world]
