"""The CCC++ network (METHOD.md section 5; paper Tables III-IV).

L ``(B,1,H,W)`` -> encoder (DenseNet-121 by default, one input channel, no classifier,
stride 32) -> decoder -> logits ``(B,K,H/4,W/4)`` over the model's colour classes.
Two decoders:

- ``"table4"`` (the paper's, the default): the stride-32 map upsampled by nearest x2
  three times with no skip connection, so every encoder cell paints an 8x8 block of
  the 1/4 output (the grid ``ccc_nodes.core.metrics.grid_ratio`` measures).
- ``"skip"``: the encoder's stride-16, -8 and -4 features (timm ``features_only`` /
  ``feature_info``, the same for every backbone) joined in after each bilinear x2, so
  edges come from the fine features and nothing is painted in blocks.

Fully convolutional: any H, W that are multiples of 32 work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.modeling import efficientnet_lite
from ccc_nodes.core.settings import SIZE_MULTIPLE

__all__ = ["DECODERS", "PAPER_DECODER", "SKIP_STRIDES", "STRIDE", "CCCNet", "Decoder", "SkipDecoder", "build_encoder",
           "check_input"]

PAPER_DECODER = (1024, 512, 512)  # Table IV
DECODERS = ("table4", "skip")  # config.json "decoder"; models saved before it existed are "table4"
STRIDE = SIZE_MULTIPLE  # the encoder's output stride: input sides are multiples of it (settings.check_size)
SKIP_STRIDES = (4, 8, 16, STRIDE)  # encoder features the skip decoder reads, finest first


def check_input(L: torch.Tensor) -> None:
    """Refuse an input the network cannot take: lightness ``(B, 1, H, W)`` with H and W
    multiples of :data:`STRIDE`."""
    if L.dim() != 4 or L.shape[1] != 1:
        raise ValueError(f"L must have shape (B, 1, H, W), got {tuple(L.shape)}")
    if L.shape[-1] % STRIDE or L.shape[-2] % STRIDE:
        raise ValueError(f"input size {tuple(L.shape[-2:])} must be a multiple of {STRIDE}")


def build_encoder(
    name: str = "densenet121", features: bool = False, pretrained: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """A timm backbone with one input channel and no classifier head.

    Arguments:
      name: timm model name.
      features: False: the whole backbone, whose ``forward_features`` gives the stride-32
        map with ``num_features`` channels (1024 x 7 x 7 for DenseNet-121 at 224), as
        Table IV reads it. True: timm's ``features_only`` model, whose forward gives one
        map per stride of its ``feature_info`` (what the skip decoder reads).
      pretrained: a state dict of timm's three-channel ImageNet model ``name`` (classifier
        included or not). timm loads it itself: its ``adapt_input_conv`` turns the RGB
        stem into a one-channel one (the kernels summed: a grey image is R = G = B) and the
        classifier is dropped. None: random weights (a trained model brings its own).

    An EfficientNet-Lite ``features_only`` encoder without ImageNet weights (what every
    trained skip model, the embedded default included, loads its weights into) is built
    by :mod:`ccc_nodes.core.modeling.efficientnet_lite` in plain torch: the same module
    names and maps as timm's, without timm's import (and torchvision's) on a cold start.
    """
    if features and pretrained is None and name in efficientnet_lite.VARIANTS:
        return efficientnet_lite.EfficientNetLiteFeatures(name, in_chans=1)
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown encoder {name!r}: use a timm model name such as 'densenet121'")
    kwargs = {"features_only": True} if features else {"num_classes": 0, "global_pool": ""}
    if pretrained is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": pretrained})
    return timm.create_model(name, in_chans=1, **kwargs)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # Reconstructed: each 3x3 conv is followed by BatchNorm and ReLU (METHOD.md section 5).
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class Decoder(nn.Module):
    """Table IV: (conv 3x3, upsample x2) x 3, then a 1x1 conv to K classes."""

    def __init__(self, in_channels: int, channels: Sequence[int], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in channels:
            layers += [_conv_bn_relu(cin, cout), nn.Upsample(scale_factor=2, mode="nearest")]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))


class SkipDecoder(nn.Module):
    """Skip-connection decoder: from the stride-32 map, three times: bilinear x2, join
    the encoder's map of that stride (16, 8, 4) by concatenation, conv 3x3 + BN + ReLU;
    then a 1x1 conv to K classes at 1/4 resolution, as Table IV ends.

    Arguments:
      in_channels: channels of the encoder's stride-4, -8, -16 and -32 maps.
      channels: widths of the three 3x3 convs (at 1/16, 1/8 and 1/4).
      num_classes: K.
    """

    def __init__(self, in_channels: Sequence[int], channels: Sequence[int], num_classes: int):
        super().__init__()
        c4, c8, c16, c32 = in_channels
        widths = list(channels)
        self.blocks = nn.ModuleList(
            _conv_bn_relu(cin + skip, cout)
            for cin, skip, cout in zip([c32, *widths[:2]], (c16, c8, c4), widths, strict=True)
        )
        self.head = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: the encoder's maps at strides 4, 8, 16, 32 (finest first)."""
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat((x, skip), dim=1))
        return self.head(x)


class CCCNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ccc-nodes",
    tags=["image-colorization", "ccc-plus-plus", "pytorch"],
    license="apache-2.0",
    pipeline_tag="image-to-image",
):
    """CCC++ colour-classifying colorization network.

    Arguments:
      encoder: timm backbone name; ``"densenet121"`` is the paper's (Table III).
      decoder_channels: widths of the three 3x3 decoder convs; ``(1024, 512, 512)`` is
        Table IV.
      bin_size: a*b* bin size of the colour classes (paper: 6).
      kept: kept bin indices of the colour classes (``None``: all G^2 bins). Saved in
        ``config.json`` so a model always decodes with the classes it was trained on.
      decoder: ``"table4"`` (the paper's; what a ``config.json`` without this key means)
        or ``"skip"`` (:class:`SkipDecoder`, with the encoder's stride-16/-8/-4 features).
    """

    def __init__(
        self,
        encoder: str = "densenet121",
        decoder_channels: Sequence[int] = PAPER_DECODER,
        bin_size: int = 6,
        kept: Sequence[int] | None = None,
        decoder: str = "table4",
    ):
        super().__init__()
        if len(decoder_channels) != 3:
            raise ValueError("decoder_channels needs three widths (Table IV)")
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        self.classes = ColorClasses(bin_size=bin_size, kept=kept)
        self.encoder_name = encoder
        self.decoder_name = decoder
        self.decoder_widths = [int(c) for c in decoder_channels]
        self.encoder = build_encoder(encoder, features=decoder == "skip")
        if decoder == "table4":
            self.decoder = Decoder(self.encoder.num_features, self.decoder_widths, self.classes.K)
        else:
            self.levels = self._skip_levels(self.encoder.feature_info.reduction())
            channels = [self.encoder.feature_info.channels()[i] for i in self.levels]
            self.decoder = SkipDecoder(channels, self.decoder_widths, self.classes.K)

    def _save_pretrained(self, save_directory) -> None:
        """The mixin's save, with the weights file at ordinary permissions (0o666 less the
        umask) like the other files: safetensors 0.8 writes it 0o600."""
        super()._save_pretrained(save_directory)
        mask = os.umask(0o022)
        os.umask(mask)
        weights = Path(save_directory) / "model.safetensors"
        if weights.is_file():
            os.chmod(weights, 0o666 & ~mask)

    def _skip_levels(self, reductions: Sequence[int]) -> list[int]:
        """Index of the (last) feature map at each of SKIP_STRIDES."""
        levels = []
        for stride in SKIP_STRIDES:
            at = [i for i, r in enumerate(reductions) if r == stride]
            if not at:
                raise ValueError(f"encoder {self.encoder_name!r} has no stride-{stride} features "
                                 f"(its strides: {list(reductions)}); the skip decoder needs {list(SKIP_STRIDES)}")
            levels.append(at[-1])
        return levels

    @property
    def num_classes(self) -> int:
        return self.classes.K

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """Lightness ``(B,1,H,W)`` in [0, 100] -> logits ``(B,K,H/4,W/4)``."""
        check_input(L)
        x = (L - 50.0) / 50.0  # reconstructed input normalisation
        if self.decoder_name == "table4":
            return self.decoder(self.encoder.forward_features(x))
        features = self.encoder(x)
        return self.decoder([features[i] for i in self.levels])
