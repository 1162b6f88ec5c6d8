"""The bulk path: image files through overlapping stages, on one device or many ranks.

    read + decode (worker processes)  ->  L, resize  ->  network  ->  a*b*, join  ->  encode + write (threads)

Each stage hands the next one its work through a bounded queue (the loader's prefetch,
the writers' in-flight limit), so decoding, the network and encoding run at the same
time. The steps are the core's own (:func:`~ccc_nodes.core.prediction.lightness`,
:func:`~ccc_nodes.core.prediction.resize_L`, :meth:`~ccc_nodes.job.colorizer.Colorizer.logits`,
:func:`~ccc_nodes.core.prediction.decode_ab`, :func:`~ccc_nodes.core.prediction.join_lab`) with the
Colorizer's own settings; only where they run differs:

- on the CPU, the readers also compute L and its resized square, and the writers decode
  and join each image as :meth:`Colorizer.run` does, so the outputs are pixel-identical to
  the one-process path (``ccc colorize`` without ``--workers``);
- on a GPU, L, resize, network, decoding and the full-resolution join run on the device
  (same-size images joined together), and the writers only quantise and encode.

Images of any sizes share a batch: the network sees each resized to the same square,
and each is joined at its own size. Under torchrun every rank colorizes its own share of
the inputs (:class:`Ranks`); ``resume`` keeps outputs a stopped run already finished.

    ccc colorize IN -o OUT --workers 4 --resume
    torchrun --nproc-per-node 8 -m ccc_nodes.interfaces.cli colorize IN -o OUT --workers 4 --resume
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ccc_nodes.core.images import EXIF_ORIENTATION, ImageError, open_image, save_image, to_rgb
from ccc_nodes.core.prediction import STRIP_PIXELS, Prediction, decode_ab, join_lab, lightness, resize_L, to_output
from ccc_nodes.job.colorizer import Colorizer, ColorizeResult

__all__ = ["BulkReport", "Ranks", "colorize_files", "device_stages", "finished"]

# The out-of-memory failure in words (also the one-process path of `ccc colorize`).
OUT_OF_MEMORY = "not enough memory to colorize it; free some, or refuse images this large with a lower --max-pixels"
_JOIN_PIXELS = 4 * STRIP_PIXELS  # same-size images joined together on the device, up to this many pixels


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun launch; the default is a plain run (rank 0 of 1).

    Every rank takes every ``world``-th input from its ``rank`` of the one list all ranks
    build alike (disjoint shares that cover it), and the reports are gathered at the end.
    Only plain objects travel between ranks, over gloo, so any mix of CPUs and GPUs works.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """The ranks torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)
        describes; the process group is started for them. Raises ValueError when that
        environment is incomplete."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        try:
            ranks = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
            if not dist.is_initialized():  # a rank may wait a long time for the slowest one
                dist.init_process_group("gloo", timeout=timedelta(hours=24))
        except (KeyError, ValueError, RuntimeError) as e:
            raise ValueError(f"WORLD_SIZE={world} but torchrun's environment is incomplete ({e}); launch with "
                             "torchrun, or unset WORLD_SIZE") from e
        return ranks

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, asked: str) -> str:
        """The device this rank uses: each rank its own GPU (``cuda:LOCAL_RANK``) when
        ``asked`` is auto or cuda and there are GPUs; otherwise ``asked``."""
        if self.world > 1 and asked in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return asked

    def share(self, items: Sequence[Any]) -> list[Any]:
        return list(items)[self.rank :: self.world]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if self.world <= 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group together: a rank that tears gloo down while a peer's
        last collective is still in flight can abort that peer (SIGABRT)."""
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


@dataclass
class BulkReport:
    """What a bulk run did, over all ranks.

    Attributes:
      done: outputs written.
      kept: outputs already written and valid, left as they were (``resume``).
      failures: (input, why) for each input left out, in input order.
      per_rank: outputs written by each rank.
    """

    done: int = 0
    kept: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    per_rank: list[int] = field(default_factory=list)


def finished(src: str | os.PathLike, dst: str | os.PathLike) -> bool:
    """Whether ``dst`` is a finished output of ``src``: it decodes whole and has the size of
    ``src`` (EXIF orientation applied), so a truncated or stale file is not taken as done."""
    dst = Path(dst)
    if not dst.is_file():
        return False
    try:
        with Image.open(src) as im:
            size = im.size if im.getexif().get(EXIF_ORIENTATION, 1) < 5 else im.size[::-1]  # 5-8: a quarter turn
        with Image.open(dst) as out:
            if out.size != size:
                return False
            out.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
    return True


@dataclass
class _Read:
    """One input as a reader hands it on: an error, "already done", or its pixels (RGB for
    the device, or L and its resized square)."""

    index: int
    error: str | None = None
    done: bool = False
    rgb: torch.Tensor | None = None
    L: torch.Tensor | None = None
    small: torch.Tensor | None = None
    alpha: np.ndarray | None = None

    def pin_memory(self) -> _Read:
        """The loader's pinning thread (a GPU run): page-locked RGB copies to the device
        without waiting."""
        if self.rgb is not None:
            self.rgb = self.rgb.pin_memory()
        return self


class _Files(Dataset):
    """Reads and decodes inputs in the loader's worker processes."""

    def __init__(self, pairs: list[tuple[Path, Path]], size: int, max_pixels: int, resume: bool, on_device: bool):
        self.pairs, self.size, self.max_pixels = pairs, size, max_pixels
        self.resume, self.on_device = resume, on_device

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> _Read:
        src, dst = self.pairs[i]
        if self.resume and finished(src, dst):
            return _Read(i, done=True)
        try:
            im = open_image(src, self.max_pixels)
        except ImageError as e:
            return _Read(i, error=str(e).removeprefix(f"{src}: "))
        except MemoryError:
            return _Read(i, error=OUT_OF_MEMORY)
        try:
            rgb, alpha = to_rgb(im, self.max_pixels)
            del im
            if self.on_device:
                return _Read(i, rgb=torch.from_numpy(rgb), alpha=alpha)
            L = lightness(rgb)
            return _Read(i, L=L, small=resize_L(L, self.size), alpha=alpha)
        except ValueError as e:  # ImageError: e.g. NaN in a float image
            return _Read(i, error=f"colorization failed: {e}")
        except MemoryError:
            return _Read(i, error=OUT_OF_MEMORY)


def _as_list(batch: list[_Read]) -> list[_Read]:
    return batch


class _Writers:
    """Threads that render and save outputs, at most ``limit`` in flight (Pillow encodes
    and torch computes with the GIL released)."""

    def __init__(self, threads: int, limit: int, save: Callable[[Image.Image, Path], Any],
                 on_result: Callable[[int, str | None], None]):
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="ccc-write")
        self.slots = threading.Semaphore(max(1, limit))
        self.save, self.on_result = save, on_result

    def submit(self, index: int, dst: Path, render: Callable[..., Image.Image], *args: Any) -> None:
        self.slots.acquire()
        future = self.pool.submit(self._write, index, dst, render, *args)
        future.add_done_callback(lambda _: self.slots.release())

    def _write(self, index: int, dst: Path, render: Callable[..., Image.Image], *args: Any) -> None:
        try:
            image = render(*args)
        except MemoryError:
            return self.on_result(index, OUT_OF_MEMORY)
        except (ValueError, RuntimeError) as e:
            return self.on_result(index, f"colorization failed: {e}")
        try:
            self.save(image, dst)
        except OSError as e:
            return self.on_result(index, f"could not write {dst}: {e}")
        except MemoryError:
            return self.on_result(index, OUT_OF_MEMORY)
        self.on_result(index, None)

    def close(self, finish: bool) -> None:
        """Wait for the writes under way; the queued ones too if ``finish`` (else dropped)."""
        self.pool.shutdown(wait=True, cancel_futures=not finish)


def _render_host(result: ColorizeResult) -> Image.Image:
    return result.image(Image.Image)  # decode + join + quantise, as the one-process path does


def _render_rgb(rgb: torch.Tensor, alpha: np.ndarray | None) -> Image.Image:
    return to_output(rgb, Image.Image, alpha)


def readers(colorizer: Colorizer, pairs: list[tuple[Path, Path]], workers: int, resume: bool,
            on_device: bool) -> DataLoader:
    """The reading stage: batches of the Colorizer's batch size, in order, each a list of
    :class:`_Read` (at most two batches a worker ahead)."""
    return DataLoader(
        _Files(pairs, colorizer.size, colorizer.max_pixels, resume, on_device),
        batch_sampler=[list(range(i, min(i + colorizer.batch_size, len(pairs))))
                       for i in range(0, len(pairs), colorizer.batch_size)],
        collate_fn=_as_list, num_workers=workers, prefetch_factor=2 if workers else None,
        pin_memory=on_device and colorizer.device.type == "cuda")


def colorize_files(
    colorizer: Colorizer,
    pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]],
    save: Callable[[Image.Image, Path], Any] | None = None,
    *,
    workers: int = 2,
    resume: bool = False,
    progress: bool = True,
    ranks: Ranks | None = None,
    device_join: bool | None = None,
) -> BulkReport:
    """Colorize image files ``(source, destination)`` through overlapping stages.

    Arguments:
      colorizer: the model, device, size, precision, decoding, batch size and pixel limit.
      pairs: inputs and where their outputs go; under torchrun every rank passes the
        same list and colorizes its own share.
      save: writes one output (default: the CLI's, through a ``.part`` file renamed into
        place, so nothing half-written is left).
      workers: reader processes, and writer threads (0: read in this process, one writer).
      resume: keep outputs already written and valid (:func:`finished`).
      progress: a progress bar (rank 0's share under torchrun).
      ranks: this process's rank (default: a plain run).
      device_join: L, decoding and the join in this process on the Colorizer's device
        (default: on a GPU; on the CPU they run in the workers).

    Returns the :class:`BulkReport` of all ranks.
    """
    from tqdm.auto import tqdm

    save = save or save_image
    ranks = ranks or Ranks()
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    every = [(Path(s), Path(d)) for s, d in pairs]
    digest = hashlib.sha256("\n".join(f"{s}\t{d}" for s, d in every).encode()).hexdigest()
    if len(set(ranks.gather(digest))) > 1:
        raise ValueError("the ranks found different inputs (a folder changed during the start, or the machines do "
                         "not see the same files); start again once every machine sees the same files")
    mine = ranks.share(every)
    on_device = colorizer.device.type != "cpu" if device_join is None else device_join
    loader = readers(colorizer, mine, workers, resume, on_device)
    report, outcome, lock = BulkReport(), {}, threading.Lock()
    bar = tqdm(total=len(mine), desc="colorize" if ranks.world == 1 else f"colorize (rank 0 of {ranks.world})",
               unit="img", disable=not progress or not ranks.main)

    def settle(index: int, why: str | None) -> None:
        with lock:
            outcome[index] = why
            bar.update(1)

    writers = _Writers(workers, 2 * colorizer.batch_size, save, settle)
    finish = False
    try:
        for batch in loader:
            ready = []
            for item in batch:
                if item.error is not None or item.done:
                    settle(item.index, item.error or "kept")
                else:
                    ready.append(item)
            _colorize(_device_stage if on_device else _host_stage, colorizer, ready, mine, writers, settle)
            del batch, ready
        finish = True
    finally:
        writers.close(finish)
        bar.close()
    at = ranks.rank + ranks.world * np.arange(len(mine))  # this rank's inputs' places in the whole list
    failures = [(int(at[i]), str(mine[i][0]), why) for i, why in sorted(outcome.items()) if why not in (None, "kept")]
    counts = (sum(why is None for why in outcome.values()), sum(why == "kept" for why in outcome.values()))
    for (done, kept), fails in ranks.gather((counts, failures)):
        report.done += done
        report.kept += kept
        report.per_rank.append(done)
        report.failures += fails
    report.failures = [(src, why) for _, src, why in sorted(report.failures)]  # in input order, whichever rank met them
    return report


def _colorize(stage: Callable, colorizer: Colorizer, ready: list[_Read], mine, writers: _Writers, settle) -> None:
    """Run ``stage`` on a batch and hand each image's render to the writers; a batch that
    fails (e.g. out of memory) is tried again one image at a time."""
    if not ready:
        return
    try:
        renders = stage(colorizer, ready)
    except (ValueError, RuntimeError, MemoryError) as e:
        if len(ready) > 1:
            for it in ready:
                _colorize(stage, colorizer, [it], mine, writers, settle)
        else:
            settle(ready[0].index, OUT_OF_MEMORY if isinstance(e, MemoryError) else f"colorization failed: {e}")
        return
    for it, (render, *args) in zip(ready, renders, strict=True):
        writers.submit(it.index, mine[it.index][1], render, *args)


def _host_stage(colorizer: Colorizer, ready: list[_Read]) -> list[tuple]:
    """CPU: the network on the batch; each image decoded and joined by a writer."""
    logits = colorizer.logits(torch.cat([it.small for it in ready])).cpu()
    return [(_render_host, ColorizeResult(Prediction(it.L, logits[i : i + 1], colorizer.classes, it.alpha),
                                          colorizer.decoding)) for i, it in enumerate(ready)]


def _device_stage(colorizer: Colorizer, ready: list[_Read]) -> list[tuple]:
    """GPU: :func:`device_stages`; writers quantise and encode."""
    return [(_render_rgb, rgb, it.alpha) for it, rgb in zip(ready, device_stages(colorizer, [it.rgb for it in ready]),
                                                              strict=True)]


def device_stages(colorizer: Colorizer, rgbs: Sequence[torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
    """RGB images ``(H, W, 3)`` in [0, 1] of any sizes -> sRGB ``(1, 3, H, W)`` on the CPU,
    every step on the Colorizer's device: L, resize, network, decoding (its settings) and
    the full-resolution join. Same-size images go together (up to ``_JOIN_PIXELS``): their
    L is one :func:`lightness` of the images stacked into one tall picture (per pixel, the
    same numbers), then one resize and one join, so a batch costs a few calls, not a few per image."""
    device, groups = colorizer.device, {}
    for i, rgb in enumerate(rgbs):
        groups.setdefault(tuple(rgb.shape[:2]), []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(rgbs)
    with torch.inference_mode():
        chunks = []  # (indices, L (B, 1, H, W))
        for (H, W), members in groups.items():
            step = max(1, _JOIN_PIXELS // (H * W))
            for k in range(0, len(members), step):
                part = members[k : k + step]
                tall = torch.cat([torch.as_tensor(rgbs[i]).to(device, non_blocking=True) for i in part])
                chunks.append((part, lightness(tall).view(len(part), 1, H, W)))
        logits = colorizer.logits(torch.cat([resize_L(L, colorizer.size) for _, L in chunks]))
        ab, at = decode_ab(logits, colorizer.classes, colorizer.decoding), 0
        for part, L in chunks:
            rgb = join_lab(L, ab[at : at + len(part)]).cpu()
            at += len(part)
            for j, i in enumerate(part):
                out[i] = rgb[j : j + 1]
    return out
