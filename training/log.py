"""What a run shows as it goes: rank 0's lines and TensorBoard scalars and images, and
the training speed in images/s."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from training.checkpoint import RunState

STEADY_AFTER = 20  # steps excluded from the steady-state images/s


class Log:
    """Rank 0's outputs: stdout, TensorBoard (if installed and wanted)."""

    def __init__(self, out: Path, on: bool, tensorboard: bool):
        self.on, self.tb = on, None
        if on and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except ImportError:
                print("TensorBoard logging off: pip install tensorboard (the 'train' extra)", flush=True)

    def print(self, msg: str) -> None:
        if self.on:
            print(msg, flush=True)

    def scalars(self, step: int, prefix: str, values: dict) -> None:
        if self.tb:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def image(self, step: int, tag: str, img: torch.Tensor) -> None:
        if self.tb:
            self.tb.add_image(tag, img, step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()


class Speed:
    """Images/s over all ranks since this process began training, and the steady rate: after
    its first STEADY_AFTER steps (cuDNN autotuning, compilation, allocator warm-up)."""

    def __init__(self, state: RunState, world: int):
        self.t, self.seen, self.step, self.world = time.time(), state.seen, state.step, world
        self.steady: tuple[float, int] | None = None  # (time, samples) once the first steps are behind

    def stepped(self, state: RunState, device: torch.device) -> None:
        if state.step - self.step == STEADY_AFTER:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.steady = (time.time(), state.seen)

    def rate(self, state: RunState) -> float:
        return (state.seen - self.seen) * self.world / max(time.time() - self.t, 1e-9)

    def steady_rate(self, state: RunState, end: float) -> float | None:
        if self.steady is None or state.seen <= self.steady[1]:
            return None
        return (state.seen - self.steady[1]) * self.world / max(end - self.steady[0], 1e-9)
