"""A clip through the job: consecutive frames are a sequence of :meth:`Colorizer.run
<ccc_nodes.job.colorizer.Colorizer.run>` calls that carry a
:class:`~ccc_nodes.steps.temporal.TemporalState` (METHOD.md s. 14), so hints, a reference
and harmonisation reach every frame by the path a photo takes.

    for rgb in colorize_sequence(Colorizer(), frames, hints=[Hint.at(40, 60, "#c0392b")],
                                 harmonization=Harmonization("classical")):
        ...  # sRGB (1, 3, H, W) per frame, in order
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from ccc_nodes.job.colorizer import Colorizer
from ccc_nodes.steps.hints import GlobalHint, palette_prior
from ccc_nodes.steps.temporal import TEMPORAL_DEFAULTS, TemporalSettings, TemporalState, require_cv2

__all__ = ["colorize_sequence", "sequence_results"]


def _batches(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def colorize_sequence(colorizer: Colorizer, frames: Iterable[Any], *args: Any, **job: Any) -> Iterator[torch.Tensor]:
    """Colorize consecutive frames (anything ``Colorizer.run`` takes), lazily: sRGB
    ``(1, 3, H, W)`` in [0, 1] per frame, in order; the arguments are :func:`sequence_results`'."""
    for result in sequence_results(colorizer, frames, *args, **job):
        yield result.rgb


def sequence_results(
    colorizer: Colorizer,
    frames: Iterable[Any],
    temporal: bool = True,
    settings: TemporalSettings = TEMPORAL_DEFAULTS,
    state: TemporalState | None = None,
    *,
    hints: Sequence[Any] | None = None,
    **job: Any,
) -> Iterator[Any]:
    """Colorize consecutive frames, lazily: each frame's whole
    :class:`~ccc_nodes.job.colorizer.ColorizeResult`, in order (its ``rgb``, or ``image(like)``
    with the frame's alpha, as a photo's). ``temporal=False`` is frame by frame.

    Frames are read ``colorizer.batch_size`` at a time; pass ``state`` to read its cuts.
    ``hints`` (one list) steer every frame; the rest of ``job`` (``reference``,
    ``harmonization``, ``sam``, ``decoding``) is :meth:`Colorizer.run`'s."""
    if "masks" in job:
        raise ValueError("a sequence takes no object masks (they are one frame's): use harmonization")
    if temporal:
        require_cv2()  # a clear error before any frame is read
        state = state if state is not None else TemporalState(settings)
    else:
        state = None
    if job.get("reference") is not None and not isinstance(job["reference"], GlobalHint):
        job["reference"] = palette_prior(job["reference"], colorizer.classes)  # once per clip, not per batch
    for batch in _batches(frames, colorizer.batch_size):
        per_frame = None if not hints else [list(hints)] * len(batch)
        results = colorizer.run(batch, hints=per_frame, sequence=state, **job)
        del batch
        yield from results
