"""The job: one image (or a list) through every step, :meth:`Colorizer.run`.

predict (:mod:`ccc_nodes.core.prediction`) -> carry from the previous frame (a sequence's
:class:`~ccc_nodes.steps.temporal.TemporalState`) -> steer (colour hints, a reference) ->
object masks -> harmonise -> render. It is the one entry point the nodes, server, Space,
CLI and video call; its settings are :class:`~ccc_nodes.core.settings.Decoding` and
:class:`~ccc_nodes.core.settings.Harmonization`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.hub import load_model
from ccc_nodes.core.images import MAX_PIXELS, to_rgb
from ccc_nodes.core.modeling import CCCNet
from ccc_nodes.core.onnx_runtime import OnnxModel, is_onnx_file
from ccc_nodes.core.prediction import Prediction, autocast, lightness, pick_device, resize_L, to_output
from ccc_nodes.core.settings import INPUT_SIZE, PRECISIONS, Decoding, Harmonization, check_size

if TYPE_CHECKING:
    from ccc_nodes.steps.harmonize import HarmonizedPrediction
    from ccc_nodes.steps.masks import MaskSet
    from ccc_nodes.steps.temporal import TemporalState

__all__ = ["ColorizeResult", "Colorizer"]


@dataclass
class ColorizeResult:
    """One image through the whole job (:meth:`Colorizer.run`).

    Attributes:
      prediction: what the network said, after steering by hints or a reference.
      decoding: how it was decoded.
      harmonized: the harmonised prediction, or None without harmonisation.
      masks: the object masks used (None without harmonisation).
      notes: what the user should know, in words (a fallback taken, what harmonisation did).
    """

    prediction: Prediction
    decoding: Decoding
    harmonized: HarmonizedPrediction | None = None
    notes: list[str] = field(default_factory=list)
    _rgb: torch.Tensor | None = field(default=None, repr=False)

    @property
    def final(self) -> Prediction:
        """The prediction the colours come from: the harmonised one, else :attr:`prediction`."""
        return self.harmonized if self.harmonized is not None else self.prediction

    @property
    def masks(self) -> MaskSet | None:
        return None if self.harmonized is None else self.harmonized.masks

    @property
    def rgb(self) -> torch.Tensor:
        """sRGB ``(1, 3, H, W)`` in [0, 1] at the input's full size."""
        if self._rgb is None:
            self._rgb = self.final.rgb(self.decoding)
        return self._rgb

    @property
    def class_map(self) -> torch.Tensor:
        """The class map to show ``(1, h, w)``: the harmonised one after harmonisation."""
        return self.final.shown_class_map

    def image(self, like: Any) -> Any:
        """The colours as the kind of object ``like`` is (PIL, numpy, tensor)."""
        return to_output(self.rgb, like, self.prediction.alpha)


class Colorizer:
    """Colorize images with a CCC++ model.

    Arguments:
      model: a :class:`CCCNet`, or what :func:`ccc_nodes.load_model` takes (``None`` for
        the embedded default, a folder, or a Hub repo id), or an exported ``.onnx`` file or
        :class:`~ccc_nodes.core.onnx_runtime.OnnxModel` (run by onnxruntime, in fp32).
      device: ``"auto"`` (CUDA > MPS > CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
      size: the square input size of the network, a multiple of 32 (paper: 224).
      precision: ``"auto"`` (bf16/fp16 on GPU, fp32 on CPU), ``"fp32"``, ``"bf16"``, ``"fp16"``.
      decoding: a :class:`~ccc_nodes.core.settings.Decoding` or a mode name (default argmax).
      batch_size: images per forward pass.
      max_pixels: refuse larger inputs (decompression bombs).
    """

    def __init__(
        self,
        model: CCCNet | str | os.PathLike | None = None,
        *,
        device: str | torch.device = "auto",
        size: int = INPUT_SIZE,
        precision: str = "auto",
        decoding: Decoding | str | None = None,
        batch_size: int = 8,
        max_pixels: int = MAX_PIXELS,
        revision: str | None = None,
    ):
        check_size(size)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        decoding = Decoding.of(decoding)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if is_onnx_file(model):  # an exported network, run by onnxruntime
            model = OnnxModel(model)
        if isinstance(model, OnnxModel) and precision not in ("auto", "fp32"):
            raise ValueError(f"an ONNX model runs in fp32 (onnxruntime), not {precision}: use precision auto or fp32")
        self.device = pick_device(device)
        if self.device.type == "cpu" and precision == "bf16":
            warnings.warn("precision bf16 on the CPU (autocast) runs many times slower than fp32; use auto or fp32 "
                          "there", stacklevel=2)
        if not isinstance(model, (CCCNet, OnnxModel)):
            model = load_model(model, revision=revision)
        self.model = model.to(self.device).eval()
        self.size, self.precision, self.decoding = size, precision, decoding
        self.batch_size, self.max_pixels = batch_size, max_pixels

    @property
    def classes(self) -> ColorClasses:
        return self.model.classes

    @torch.inference_mode()
    def logits(self, L: torch.Tensor) -> torch.Tensor:
        """L ``(B, 1, H, W)`` at any size -> logits ``(B, K, size/4, size/4)`` (float32)."""
        x = resize_L(L.to(self.device, torch.float32), self.size)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            return self.model(x).float()

    def predict(self, images: Any | Sequence[Any]) -> list[Prediction]:
        """Images (one or a list; of any sizes) -> one :class:`Prediction` each."""
        items = images if isinstance(images, (list, tuple)) else [images]
        preds: list[Prediction] = []
        for start in range(0, len(items), self.batch_size):
            chunk = [to_rgb(im, self.max_pixels) for im in items[start : start + self.batch_size]]
            Ls = [lightness(rgb) for rgb, _ in chunk]
            small = torch.cat([resize_L(L, self.size) for L in Ls])
            logits = self.logits(small).cpu()
            preds += [
                Prediction(L=L, logits=logits[i : i + 1], classes=self.classes, alpha=alpha)
                for i, (L, (_, alpha)) in enumerate(zip(Ls, chunk, strict=True))
            ]
        return preds

    def run(
        self,
        images: Any | Sequence[Any],
        *,
        hints: Sequence[Any] | None = None,
        reference: Any = None,
        harmonization: Harmonization | None = None,
        masks: Any = None,
        sam: Any = None,
        decoding: Decoding | str | None = None,
        sequence: TemporalState | None = None,
    ) -> ColorizeResult | list[ColorizeResult]:
        """The whole job: predict -> carry (a sequence) -> steer -> object masks -> harmonise -> render.

        Arguments:
          images: one image or a list (anything :func:`~ccc_nodes.core.images.to_rgb` takes).
          hints: colour hints (:class:`~ccc_nodes.steps.hints.Hint`) for one image, or one list
            of them per image of a list (METHOD.md s. 13).
          reference: an image, a palette or a :class:`~ccc_nodes.steps.hints.GlobalHint` whose
            colours steer every image.
          harmonization: :class:`~ccc_nodes.core.settings.Harmonization`, or None for none.
          masks: object masks for one image (anything
            :func:`~ccc_nodes.steps.masks.given_masks` takes, or a MaskSet), or one per image of a
            list (None for none); they replace ``harmonization.masks``. Without
            ``harmonization``, the images given masks are harmonised with the defaults.
          sam: a loaded SAM model (:func:`~ccc_nodes.steps.masks.load_sam`), for SAM masks.
          decoding: overrides the Colorizer's decoding for this call.
          sequence: the :class:`~ccc_nodes.steps.temporal.TemporalState` of a clip whose next
            frames ``images`` are, in order: each prediction first takes the classes carried
            along the motion from the previous frames (METHOD.md s. 14).

        Returns one :class:`ColorizeResult` per image (one for one image, a list for a list).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        n = len(items)
        per_hints = _per_image(hints, n, single, "hints")
        per_masks = _per_image(masks, n, single, "masks")
        decoding = self.decoding if decoding is None else Decoding.of(decoding)
        steer = None
        if reference is not None or any(per_hints):
            from ccc_nodes.steps.hints import steering

            steer = steering(self.classes, reference)
        results = []
        for pred, hs, given in zip(self.predict(items), per_hints, per_masks, strict=True):
            if sequence is not None:
                pred = sequence.carried(pred)
            if steer is not None:
                pred = steer(pred, hs or ())
            result = ColorizeResult(pred, decoding)
            settings = harmonization if harmonization is not None or given is None else Harmonization()
            if settings is not None:
                from ccc_nodes.steps.harmonize import harmonize_with

                result.harmonized = harmonize_with(pred, settings, masks=given, sam=sam)
                result.notes += result.harmonized.notes
            results.append(result)
        return results[0] if single else results

    def colorize(self, images: Any | Sequence[Any], hints: Sequence[Any] | None = None, reference: Any = None,
                 **job: Any) -> Any:
        """Colorize one image or a list; each output is the same size and kind as its input
        (PIL -> PIL RGB or RGBA, numpy -> numpy ``(H, W, 3)``, tensor -> ``(3, H, W)``).
        ``hints``, ``reference`` and the rest: as :meth:`run`."""
        results = self.run(images, hints=hints, reference=reference, **job)
        if isinstance(results, ColorizeResult):
            return results.image(images)
        return [r.image(item) for r, item in zip(results, images, strict=True)]

    __call__ = colorize

    def iter_colorize(self, images: Iterable[Any]) -> Iterable[Any]:
        """Colorize lazily, one batch in memory at a time."""
        batch: list[Any] = []
        for item in images:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield from self.colorize(batch)
                batch = []
        if batch:
            yield from self.colorize(batch)


def _per_image(value: Any, n: int, single: bool, what: str) -> list[Any]:
    """A per-image argument of :meth:`Colorizer.run` as one entry per image."""
    if single:
        return [value]
    if value is None:
        return [None] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what}: {len(value)} lists of {what} for {n} images (give one per image)")
    return value
