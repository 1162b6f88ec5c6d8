"""EfficientNet-Lite as the skip decoder reads it, in plain torch (no timm, no torchvision).

The embedded default's encoder. timm builds the same network (``timm.create_model(
"efficientnet_lite0", in_chans=1, features_only=True)``) but importing timm imports
torchvision and, through it, ``torch._dynamo``: several times ``import torch`` on a cold
start, for a network of 30 layers. This module builds it from the EfficientNet-Lite
recipe (Tan & Le 2019; the Lite variants: no squeeze-excitation, ReLU6, a fixed 32-channel
stem) with timm's module names, so the two share one state dict key for key and compute
the same maps (``tests/test_model.py`` checks both against timm). Training from ImageNet
weights still goes through timm (:func:`ccc_nodes.core.modeling.build_encoder`).

Output: the maps at strides 2, 4, 8, 16 and 32 (the ends of stages 0, 1, 2, 4 and 6),
finest first, as timm's ``features_only`` model gives them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["VARIANTS", "EfficientNetLiteFeatures", "FeatureInfo"]

# name: (channel multiplier, depth multiplier)
VARIANTS = {f"efficientnet_lite{i}": m for i, m in enumerate(
    [(1.0, 1.0), (1.0, 1.1), (1.1, 1.2), (1.2, 1.4), (1.4, 1.8)])}
# Stages: (block, repeats, kernel, stride, expansion, channels). "ds": depthwise-separable;
# "ir": inverted residual (MobileNetV2).
STAGES = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
          ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))
STEM = 32  # Lite: the stem's width is not scaled


def round_channels(channels: float, divisor: int = 8) -> int:
    """Channels scaled by the width multiplier, to a multiple of 8, never more than 10 % under."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm followed by ReLU6 (or nothing): one module, so its keys are the norm's."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparable(nn.Module):
    """Depthwise conv + BN-ReLU6, pointwise conv + BN; a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw = _conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct(cin)
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct(cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return y + x if self.residual else y


class InvertedResidual(nn.Module):
    """Pointwise expansion + BN-ReLU6, depthwise conv + BN-ReLU6, pointwise projection + BN;
    a residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct(mid)
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct(cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))))
        return y + x if self.residual else y


class FeatureInfo:
    """Stride and channels of each output map (the two questions the skip decoder asks)."""

    def __init__(self, reductions: list[int], channels: list[int]):
        self._reductions, self._channels = reductions, channels

    def reduction(self) -> list[int]:
        return list(self._reductions)

    def channels(self) -> list[int]:
        return list(self._channels)


class EfficientNetLiteFeatures(nn.Module):
    """One of :data:`VARIANTS`, ``in_chans`` input channels, returning a list of five maps."""

    def __init__(self, name: str = "efficientnet_lite0", in_chans: int = 1):
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}: one of {', '.join(VARIANTS)}")
        width, depth = VARIANTS[name]
        self.conv_stem = _conv(in_chans, STEM, 3, stride=2)
        self.bn1 = BatchNormAct(STEM)
        stages, cin, stride, taps = [], STEM, 2, []
        for i, (kind, repeats, kernel, s, expansion, channels) in enumerate(STAGES):
            cout = round_channels(channels * width)
            # the first and last stages keep their single block; the others grow with depth
            n = repeats if i in (0, len(STAGES) - 1) else math.ceil(repeats * depth)
            blocks = []
            for j in range(n):
                first = (cin, s) if j == 0 else (cout, 1)
                blocks.append(DepthwiseSeparable(first[0], cout, kernel, first[1]) if kind == "ds"
                              else InvertedResidual(first[0], cout, kernel, first[1], expansion))
            stages.append(nn.Sequential(*blocks))
            cin, stride = cout, stride * s
            # a map is taken where the next stage halves it, and after the last stage
            if i == len(STAGES) - 1 or STAGES[i + 1][3] > 1:
                taps.append((i, stride, cout))
        self.blocks = nn.Sequential(*stages)
        self.taps = [i for i, _, _ in taps]
        self.feature_info = FeatureInfo([r for _, r, _ in taps], [c for _, _, c in taps])
        for m in self.modules():  # the TensorFlow recipe's initialisation, for a network trained from scratch
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        features = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.taps:
                features.append(x)
        return features
