"""The CCC++ network (METHOD.md section 5; paper Tables III-IV).

L ``(B,1,H,W)`` -> encoder (DenseNet-121 by default, one input channel, no classifier,
stride 32) -> decoder (Table IV) -> logits ``(B,K,H/4,W/4)`` over the model's colour
classes. Fully convolutional: any H, W that are multiples of 32 work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from ..classes import ColorClasses

__all__ = ["PAPER_DECODER", "CCCNet", "Decoder", "build_encoder"]

PAPER_DECODER = (1024, 512, 512)  # Table IV


def build_encoder(name: str = "densenet121") -> nn.Module:
    """A timm backbone with one input channel and no classifier head.

    Its ``forward_features`` gives the stride-32 feature map with ``num_features``
    channels (1024 x 7 x 7 for DenseNet-121 at 224). Weights are random here; a trained
    model brings its own, and ``training/`` can start from ImageNet weights.
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown encoder {name!r}: use a timm model name such as 'densenet121'")
    return timm.create_model(name, pretrained=False, in_chans=1, num_classes=0, global_pool="")


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
    """

    def __init__(
        self,
        encoder: str = "densenet121",
        decoder_channels: Sequence[int] = PAPER_DECODER,
        bin_size: int = 6,
        kept: Sequence[int] | None = None,
    ):
        super().__init__()
        if len(decoder_channels) != 3:
            raise ValueError("decoder_channels needs three widths (Table IV)")
        self.classes = ColorClasses(bin_size=bin_size, kept=kept)
        self.encoder_name = encoder
        self.encoder = build_encoder(encoder)
        self.decoder = Decoder(self.encoder.num_features, list(decoder_channels), self.classes.K)

    @property
    def num_classes(self) -> int:
        return self.classes.K

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        """Lightness ``(B,1,H,W)`` in [0, 100] -> logits ``(B,K,H/4,W/4)``."""
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"L must have shape (B, 1, H, W), got {tuple(L.shape)}")
        if L.shape[-1] % 32 or L.shape[-2] % 32:
            raise ValueError(f"input size {tuple(L.shape[-2:])} must be a multiple of 32")
        x = (L - 50.0) / 50.0  # reconstructed input normalisation
        return self.decoder(self.encoder.forward_features(x))
