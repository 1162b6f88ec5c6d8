"""ONNX: the CCC++ network exported for other runtimes, and run with onnxruntime.

    ccc export-onnx MODEL out.onnx                        # export_onnx(load_model(MODEL), "out.onnx")
    ccc colorize photo.jpg -o out/ --model out.onnx       # OnnxModel("out.onnx") in the Colorizer

The file holds the network alone: input ``L`` ``(B, 1, H, W)`` in [0, 100] -> output ``logits``
``(B, K, H/4, W/4)``, batch and size dynamic (H and W multiples of 32, the encoder's stride).
Everything around it - lightness, resize, decoding, the full-resolution join, hints,
harmonisation - stays the core's one path: :class:`OnnxModel` keeps the network's contract
(``model(L) -> logits``, ``model.classes``), and :class:`~ccc_nodes.job.colorizer.Colorizer` takes it
in place of a :class:`~ccc_nodes.core.modeling.CCCNet`.

The colour classes travel in the file's ``metadata_props``, so another runtime decodes without
the Python model (METHOD.md s. 8; argmax decoding, Eq. 17-18, is ``centers[argmax_k logits]``):

- ``ccc.classes``: ``{"bin_size": s, "kept": [q, ...]}`` (:meth:`ColorClasses.to_config`);
- ``ccc.centers``: ``[[a*, b*], ...]``, the bin centre of each of the K classes, in class order;
- ``ccc.config``: the model's ``config.json`` (encoder, decoder, widths).

onnx, onnxscript (the exporter) and onnxruntime come with ``pip install 'ccc-nodes[onnx]'``; this
module imports them only when it needs them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.extras import missing_module
from ccc_nodes.core.hub import ModelLoadError
from ccc_nodes.core.images import part_file

__all__ = ["EXTRA", "METADATA_KEYS", "OPSET", "RUNTIMES", "ExportError", "OnnxModel", "OnnxRunError", "export_onnx",
           "open_model"]

# 20: what torch's exporter writes natively (no version conversion of the graph), and what
# onnxruntime runs from 1.17 on.
OPSET = 20
EXTRA = "onnx"  # pip install 'ccc-nodes[onnx]'
RUNTIMES = ("torch", "onnx")
METADATA_KEYS = ("ccc.classes", "ccc.centers", "ccc.config")
INPUT, OUTPUT = "L", "logits"
_EXAMPLE = (2, 1, 224, 224)  # the example the exporter traces; batch and size stay symbolic


class ExportError(RuntimeError):
    """The exported graph could not be made, or does not compute what the torch model does."""


class OnnxRunError(RuntimeError):
    """onnxruntime could not run the network on a batch; the message (one line) says why.

    A RuntimeError, as torch's failures are, so every caller's fallback (one image at a
    time, then the image reported) takes both runtimes alike; onnxruntime's own errors
    (Fail, InvalidArgument, ...) derive from Exception alone and would escape them."""


def _require(*modules: str) -> None:
    """ModuleNotFoundError naming the extra, for the first of ``modules`` that is not installed."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise missing_module(ModuleNotFoundError(name=name), "ONNX export and --runtime onnx", EXTRA)


def is_onnx_file(source: object) -> bool:
    """Whether ``source`` names an ONNX file (by its ``.onnx`` suffix), not a model folder or Hub id."""
    return isinstance(source, (str, os.PathLike)) and str(source).lower().endswith(".onnx")


def open_model(source: Any, runtime: str | None = None, *, revision: str | None = None) -> Any:
    """What :class:`~ccc_nodes.job.colorizer.Colorizer` takes as its model, for a runtime.

    ``runtime``: ``"torch"``, ``"onnx"`` or None (onnx for an ``.onnx`` file, else torch).
    torch: ``source`` is passed on as it is (the Colorizer loads it); onnx: an
    :class:`OnnxModel` of the ``.onnx`` file ``source``. Mismatches are one ModelLoadError
    that says what to do.
    """
    if runtime not in (None, *RUNTIMES):
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    onnx_file = is_onnx_file(source)
    if runtime == "torch" and onnx_file:
        raise ModelLoadError(f"{str(source)!r} is an ONNX file: run it with the onnx runtime (--runtime onnx), "
                             "or give the model folder or Hub id it was exported from")
    if runtime == "onnx" and not onnx_file:
        name = "default" if source is None else str(source)
        raise ModelLoadError(f"the onnx runtime runs an exported .onnx file, not {name!r}: make one with "
                             f"`ccc export-onnx {name} model.onnx` and pass it as the model")
    if onnx_file:
        if revision is not None:
            raise ModelLoadError("--revision is for Hub models; an .onnx file has none")
        return OnnxModel(source)
    return source


class OnnxModel:
    """An exported CCC++ network run by onnxruntime, with the contract of :class:`CCCNet`:
    ``model(L)`` maps L ``(B, 1, H, W)`` in [0, 100] (H, W multiples of 32) to logits
    ``(B, K, H/4, W/4)`` (float32, on L's device), and ``model.classes`` is its
    :class:`ColorClasses`, read from the file's metadata.

    Arguments:
      path: an ``.onnx`` file written by :func:`export_onnx`.
      threads: onnxruntime's intra-op threads; None: torch's (``torch.get_num_threads()``),
        so one setting governs both runtimes.
      providers: onnxruntime execution providers, in order of preference.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        _require("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX file {str(path)!r} does not exist"
                                 + (" (it is a folder)" if self.path.is_dir() else ""))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: no per-node warnings on stderr
        # No spinning once a run is done: torch's own work (L, the full-resolution join) comes
        # next on the same cores, and spinning threads would take them from it.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=list(providers))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types for unreadable files
            raise ModelLoadError(f"{str(path)!r} is not a readable ONNX model: {str(e).strip().splitlines()[-1]}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if "ccc.classes" not in meta:
            raise ModelLoadError(f"{str(path)!r} has no CCC++ colour classes in its metadata: export it with "
                                 "`ccc export-onnx MODEL out.onnx`")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        names = ([i.name for i in inputs], [o.name for o in outputs])
        if names != ([INPUT], [OUTPUT]):
            raise ModelLoadError(f"{str(path)!r} has inputs {names[0]} and outputs {names[1]}; a CCC++ export has "
                                 f"[{INPUT!r}] and [{OUTPUT!r}]")
        self.classes = _classes(meta["ccc.classes"], path)
        self.config = _metadata_object(meta.get("ccc.config", "{}"), "ccc.config", path)
        # The declared shapes (an int is fixed, a name or None free): checked here, before any work.
        (given,), (out,) = inputs, outputs
        L_shape, logits_shape = list(given.shape or [None] * 4), list(out.shape or [None] * 4)
        if given.type != "tensor(float)" or len(L_shape) != 4 or (isinstance(L_shape[1], int) and L_shape[1] != 1):
            raise ModelLoadError(f"{str(path)!r} takes {given.type} {given.shape} as {INPUT!r}; a CCC++ export takes "
                                 "tensor(float) (batch, 1, height, width)")
        if out.type != "tensor(float)" or len(logits_shape) != 4:
            raise ModelLoadError(f"{str(path)!r} gives {out.type} {out.shape} as {OUTPUT!r}; a CCC++ export gives "
                                 "tensor(float) (batch, K, height/4, width/4)")
        if isinstance(logits_shape[1], int) and logits_shape[1] != self.classes.K:
            raise ModelLoadError(_wrong_classes(path, logits_shape[1], self.classes.K))
        # A batch frozen into the graph (as some tools export): the network runs that many at a time.
        self.fixed_batch = L_shape[0] if isinstance(L_shape[0], int) and L_shape[0] > 0 else None
        # A failed run is raised in words (OnnxRunError); onnxruntime's own log lines of it stay off stderr.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, {self.classes!r})"

    @property
    def num_classes(self) -> int:
        return self.classes.K

    def __call__(self, L: torch.Tensor) -> torch.Tensor:
        """L -> logits. A batch onnxruntime cannot run (out of memory, a batch size the graph
        does not take) is run again one image at a time; an image that fails alone is an
        :class:`OnnxRunError` in one line, or a MemoryError when memory ran out, and logits
        whose shape is not the classes' a ModelLoadError."""
        if L.dim() != 4 or L.shape[1] != 1:
            raise ValueError(f"L must have shape (B, 1, H, W), got {tuple(L.shape)}")
        if L.shape[-1] % 32 or L.shape[-2] % 32:
            raise ValueError(f"input size {tuple(L.shape[-2:])} must be a multiple of 32")
        x = np.ascontiguousarray(L.detach().to("cpu", torch.float32).numpy())
        step = self.fixed_batch or len(x)
        parts = [self._batch(x[i : i + step]) for i in range(0, len(x), step)]
        return torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0]).to(L.device)

    def _batch(self, x: np.ndarray) -> np.ndarray:
        """One batch, padded to a fixed batch if the graph has one; one image at a time if it fails."""
        n = len(x)
        if self.fixed_batch is not None:
            if n < self.fixed_batch:
                x = np.concatenate([x, np.zeros((self.fixed_batch - n, *x.shape[1:]), x.dtype)])
            return self._run(x)[:n]
        try:
            return self._run(x)
        except (OnnxRunError, MemoryError):
            if n == 1:
                raise
        return np.concatenate([self._run(x[i : i + 1]) for i in range(n)])

    def _run(self, x: np.ndarray) -> np.ndarray:
        """onnxruntime on one batch, its errors in words, its logits' shape checked."""
        try:
            (logits,) = self.session.run([OUTPUT], {INPUT: x}, self._run_options)
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors (Fail, InvalidArgument, ...) derive from Exception
            why = _one_line(e)
            if "failed to allocate memory" in why.lower() or "bad_alloc" in why:
                raise MemoryError(f"onnxruntime ran out of memory running {self.path.name} on L {x.shape}: {why}") from e
            raise OnnxRunError(f"onnxruntime could not run {self.path.name} on L {x.shape}: {why}") from e
        want = (len(x), self.classes.K, x.shape[2] // 4, x.shape[3] // 4)
        if logits.ndim != 4 or logits.shape[:2] != want[:2]:
            if logits.ndim == 4 and logits.shape[0] == len(x):
                raise ModelLoadError(_wrong_classes(self.path, logits.shape[1], self.classes.K))
            raise ModelLoadError(f"{str(self.path)!r} gives logits {logits.shape} for L {x.shape}; a CCC++ export "
                                 f"gives {want}")
        return logits

    # Module-like no-ops, so the Colorizer treats both runtimes alike. The session runs on its
    # providers (the CPU here) whatever the device; outputs follow the input's device.
    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self


def _one_line(e: BaseException) -> str:
    """onnxruntime's message in one line: its status message without the source location."""
    text = " ".join(str(e).split())
    text = text.split("Status Message: ", 1)[-1]
    text = re.sub(r"^\S+\.(cc|cpp|h):\d+ .*?\) ", "", text)  # "/src/.../bfc_arena.cc:360 void* f(...) "
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)


def _wrong_classes(path: Path | str, channels: int, k: int) -> str:
    return (f"{str(path)!r} gives {channels} channels of logits, but its metadata ccc.classes has {k} colour "
            "classes: the file's network and classes do not belong together; export it again with "
            "`ccc export-onnx MODEL out.onnx`")


def _metadata_object(text: str, key: str, path: Path | str) -> dict:
    """A metadata entry that holds a JSON object -> the object; ModelLoadError in words otherwise
    (not JSON, another type, or nested past the parser's depth)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ModelLoadError(f"{str(path)!r}: its metadata {key} must be a JSON object, got {shown!r}")
    return value


def _classes(text: str, path: Path | str) -> ColorClasses:
    """The metadata ``ccc.classes`` -> ColorClasses: ``{"bin_size": s, "kept": [q, ...]}``,
    as :meth:`ColorClasses.to_config` writes it (no ``kept``: every bin, as
    :meth:`ColorClasses.from_config` reads it); ModelLoadError in words otherwise."""
    config = _metadata_object(text, "ccc.classes", path)
    kept = config.get("kept")
    whole = kept is None or (isinstance(kept, list) and all(type(q) is int for q in kept))
    if type(config.get("bin_size")) is not int or not whole:
        raise ModelLoadError(f"{str(path)!r}: its metadata ccc.classes must be {{\"bin_size\": s, \"kept\": [q, ...]}} "
                             "with whole numbers, as `ccc export-onnx` writes it")
    try:
        return ColorClasses.from_config(config)
    except ValueError as e:
        raise ModelLoadError(f"{str(path)!r}: its metadata ccc.classes cannot be read: {e}") from None


def _metadata(model: Any) -> dict[str, str]:
    config = dict(getattr(model, "_hub_mixin_config", None) or {})
    config.setdefault("encoder", model.encoder_name)
    config.setdefault("decoder", model.decoder_name)
    config.update(model.classes.to_config())
    return {
        "ccc.classes": json.dumps(model.classes.to_config()),
        "ccc.centers": json.dumps([[round(float(a), 6), round(float(b), 6)] for a, b in model.classes.centers]),
        "ccc.config": json.dumps(config, sort_keys=True),
    }


def _check(path: Path, model: Any) -> None:
    """The written file run by onnxruntime against the torch model: a batch of 2 at the traced
    size and one at another (non-square) size, so a size or batch frozen into the graph fails."""
    runtime = OnnxModel(path)
    if runtime.classes != model.classes:
        raise ExportError(f"the file's colour classes {runtime.classes} are not the model's {model.classes}")
    gen = torch.Generator().manual_seed(0)
    for shape in ((2, 1, 224, 224), (1, 1, 96, 160)):
        L = torch.rand(shape, generator=gen) * 100
        with torch.inference_mode():
            want = model(L)
        got = runtime(L)
        if got.shape != want.shape:
            raise ExportError(f"onnxruntime gives logits {tuple(got.shape)} for L {shape}; torch gives {tuple(want.shape)}")
        scale = float(want.abs().max()) or 1.0
        err = float((got - want).abs().max())
        if err > 1e-3 * max(scale, 1.0):
            raise ExportError(f"onnxruntime's logits differ from torch's by up to {err:.3g} (logits up to "
                              f"{scale:.3g}) for L {shape}")


def export_onnx(model: Any, path: str | os.PathLike, *, opset: int = OPSET, check: bool = True) -> Path:
    """Export a :class:`CCCNet` to the ONNX file ``path`` (one file, weights inside).

    Batch, height and width are dynamic (height and width multiples of 32); the colour
    classes go into the metadata (module docstring). Written to a temporary file beside
    ``path`` and moved into place only when whole (and, with ``check``, when onnxruntime's
    logits match torch's), so a failed export leaves nothing at ``path``. Returns ``path``.
    """
    _require("onnx", "onnxscript", "onnx_ir", *(("onnxruntime",) if check else ()))
    import copy

    import onnx
    import onnx_ir as ir

    path = Path(path).expanduser()
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"the output {str(path)!r} must end in .onnx (how a model is recognised as an ONNX file)")
    if path.is_dir():
        raise ValueError(f"the output {str(path)!r} is a folder; give a file name ending in .onnx")
    net = copy.deepcopy(model).to("cpu", torch.float32).eval()
    batch = torch.export.Dim("batch", min=1)
    h32, w32 = torch.export.Dim("h32", min=1), torch.export.Dim("w32", min=1)
    example = torch.rand(_EXAMPLE, generator=torch.Generator().manual_seed(0)) * 100
    try:
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes={"L": {0: batch, 2: 32 * h32, 3: 32 * w32}},
                                    optimize=True, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types (torch._dynamo, onnxscript, ...)
        raise ExportError(f"torch could not export the model to ONNX: {str(e).strip().splitlines()[0]}") from e
    written = program.model.opset_imports.get("", opset)
    if written != opset:  # the exporter falls back to an opset it has, with only a warning
        raise ExportError(f"torch's exporter cannot write opset {opset} (it would write {written}); use {OPSET}")
    graph = program.model.graph
    # Names a reader of the file understands, in place of the tracer's symbols.
    graph.inputs[0].shape = ir.Shape(["batch", 1, "height", "width"])
    graph.outputs[0].shape = ir.Shape(["batch", net.classes.K, "height/4", "width/4"])
    program.model.metadata_props.update(_metadata(net))
    program.model.doc_string = ("CCC++ colorization network: L (batch, 1, height, width) in [0, 100], height and "
                                "width multiples of 32 -> logits (batch, K, height/4, width/4) over the colour "
                                "classes of metadata ccc.classes / ccc.centers")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A new file under a random name, made exclusively (images.part_file), written through the
    # open file: nothing planted beside the output (a file, a link) is written through.
    tmp, f = part_file(path)
    try:
        with f:
            onnx.save(ir.serde.serialize_model(program.model), f)  # one file, weights inside
        if check:
            _check(tmp, net)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------- ccc export-onnx
def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export the network to ONNX (for onnxruntime and other runtimes)",
        description="Export a CCC++ model to one ONNX file: batch and size dynamic (multiples of 32), opset "
                    f"{OPSET}, colour classes in its metadata. The file is checked with onnxruntime against "
                    "torch before it is written; colorize with it: ccc colorize ... --model OUT.onnx")
    p.add_argument("model", metavar="MODEL", help="model folder, Hub repo id, or 'default' (the embedded model)")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    p.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from ccc_nodes.core.hub import load_model

    out = Path(args.output)
    try:
        _require("onnx", "onnxscript", "onnx_ir", "onnxruntime")
        if out.suffix.lower() != ".onnx" or out.is_dir():
            raise ValueError(f"the output {str(out)!r} must be a file name ending in .onnx")
        for parent in out.absolute().parents:  # the folder it goes in, made if need be
            if parent.exists():
                if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                    raise ValueError(f"cannot write {str(out)!r}: {parent} is "
                                     + ("a file" if not parent.is_dir() else "not writable"))
                break
        model = load_model(args.model, revision=args.revision)
        print(f"exporting {args.model} ({model.encoder_name}, {model.decoder_name} decoder, "
              f"K={model.classes.K}) to ONNX ...", file=sys.stderr)
        export_onnx(model, out)
    except (ModelLoadError, ExportError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset {OPSET}, batch and size dynamic); "
          "onnxruntime's logits match torch's", file=sys.stderr)
    return 0
