"""Train a CCC++ model: CPU, one GPU, or many under torchrun (DDP).

    python -m training.train --data photos/train --val photos/val --out runs/densenet --time-budget 3600
    python -m training.train --config training/configs/paper.yaml --data 'places/train-{000..127}.tar' --out runs/p
    torchrun --standalone --nproc-per-node 8 -m training.train --config training/configs/paper.yaml ...

Reads as a story: list the images (each rank its own shard), choose the colour classes
from their histogram (Eq. 12) or a classes file, build the network, train with
class-rebalanced cross-entropy (Eq. 13-16) - checkpointing as it goes, so the same
command with ``--resume`` continues a killed run on the same trajectory - evaluate on
val, and save a Hugging Face-format folder with a model card (optionally pushed to the Hub).
Every option can come from a YAML or JSON ``--config`` file; the command line wins.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import torch

from ccc_nodes.core.classes import ColorClasses
from ccc_nodes.core.hub import ModelLoadError
from ccc_nodes.core.loss import RebalancedLoss
from ccc_nodes.core.prediction import autocast, resolve_precision
from training import dist, finish, setup
from training.args import RESUMABLE, TrainError, build_parser, command_line, load_config, parse_args
from training.checkpoint import RunState
from training.data import EpochSampler, augment, lab_targets, make_loader
from training.evaluate import evaluate, sample_grid
from training.log import Log, Speed
from training.optim import EMA_DECAY, adam, lr_at, weight_average
from training.setup import CHECKPOINT
from training.stats import load_classes
from training.stop import Progress, Stop, all_done, stopped

# What other code imports from the trainer: its options (training.args), learning-rate schedule
# and weight average (training.optim), checkpoint name (training.setup), and the command.
__all__ = ["CHECKPOINT", "EMA_DECAY", "RESUMABLE", "TrainError", "build_parser", "load_config", "lr_at", "main",
           "parse_args", "train", "weight_average"]
MAX_EMPTY_BATCHES = 100  # consecutive batches without one usable image: the data is unusable


def main(argv: list[str] | None = None) -> int:
    """The command: options and data problems are one-line errors (exit 2), Ctrl-C before
    training starts exits 130; ``CCC_DEBUG=1`` shows tracebacks instead."""
    args = parse_args(argv)
    try:
        return train(args, argv)
    except (TrainError, FileNotFoundError, ValueError, ModelLoadError) as e:
        if os.environ.get("CCC_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("CCC_DEBUG"):
            raise
        print(f"\n{Progress.interrupted()}", file=sys.stderr, flush=True)
        return 130


def train(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """The run, top to bottom: setup, the training loop, the end. Each part is a named call:
    building the run in training.setup, its end in training.finish, the loop's steps below."""
    t_start = time.time()

    # Setup: processes (torchrun), device, precision, seeds; the output folder and the checkpoint to resume.
    d, device = setup.start(args)
    precision = resolve_precision(device, args.precision, training=True)
    out, ckpt_path, ckpt = setup.open_run(args, d)
    log = Log(out, d.main, args.tensorboard)
    if ckpt:
        log.print(f"resuming from {ckpt_path} at step {ckpt['step']}")

    # Data: list the files (a wrong path or classes file fails before any decoding), then this
    # rank's shard, held in memory or streamed through CPU decode workers.
    sources, val_sources = setup.list_images(args)
    file_classes = load_classes(args.classes, args.bin_size) if args.classes != "data" and not ckpt else None
    data = setup.load_shard(args, d, device, sources, log)

    # Colour classes (Eq. 12): the checkpoint's, the data's histogram (summed over ranks), a file, or all bins.
    classes, counts = setup.colour_classes(args, d, device, data, ckpt, file_classes)
    log.print(f"classes: K = {classes.K} of {classes.num_bins} ({args.classes})")

    # Model (Tables III-IV), class-rebalanced loss (Eq. 13-16), Adam; the run state, resumed from the checkpoint.
    config = setup.model_config(args, classes)
    model, init_desc = setup.build_model(config, args, device, d, precision, log)
    loss_fn = RebalancedLoss(args.rebalance, p=args.p, class_counts=setup.class_counts(classes, counts),
                             centers=classes.centers)
    state = RunState(model, adam(model, args, device), torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
                     weight_average(model, args.ema), classes, counts, skipped=data.skipped)
    if ckpt and not state.restore(ckpt, d.rank):
        log.print("the checkpoint holds no weight average: it starts from the resumed weights")
    opt, scaler, ema = state.optimizer, state.scaler, state.ema
    final = ema.module if ema is not None else model  # what is evaluated, shown and saved
    forward = setup.wrap(model, args, device, d, log)

    # Val: a few images in memory for evaluations and sample grids during training.
    val_cache, samples = setup.val_cache(args, d, val_sources, data)

    # Train: the sampler starts where the checkpoint left it; augmentation is seeded per step.
    batches = _batches(args, d, data, state.drawn, device)
    gen = torch.Generator(device=device)
    model.train()
    bar = _progress_bar(args, d, state.step)
    t0 = time.time() - state.elapsed
    speed = Speed(state, d.world)
    with Stop(log) as stop:
        Progress.started = True
        while True:
            # Stop at --steps, --time-budget or a signal; the learning rate for how far the run is.
            state.elapsed = time.time() - t0
            frac = max(state.step / args.steps if args.steps else 0.0,
                       state.elapsed / args.time_budget if args.time_budget else 0.0)
            if all_done(frac >= 1.0 or stop.signum is not None, args, d, device, state.step):
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(state.step, frac, args.lr, args.warmup, args.schedule)
            # Batch: the next one with a usable image, augmented with this step's seed; L in, classes out.
            x = _draw(batches, state, args)
            L, target = _inputs(x, args, classes, device, gen, _step_seed(args.seed, d.rank, state.step))
            # Forward, backward, optimiser step, then the weight average.
            with autocast(device, precision):
                logits = forward(L)
            loss = loss_fn(logits, target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            state.step += 1
            if ema is not None:
                ema.update(model, step=state.step)
            state.seen += L.shape[0]
            bar.update(1)
            speed.stepped(state, device)
            # Log, evaluate, sample, checkpoint: each every so many steps.
            if d.main and (state.step % args.log_every == 0 or state.step == 1):
                weights = loss_fn.weights(target, classes.K)[torch.bincount(target.flatten(), minlength=classes.K) > 0]
                _log_step(log, bar, args, state, loss.item(), weights, speed.rate(state), t0)
            if d.main and val_cache is not None and args.eval_every and state.step % args.eval_every == 0:
                log.scalars(state.step, "val", evaluate(final, val_cache.split(32), args.size, precision))
            if d.main and samples is not None and args.sample_every and state.step % args.sample_every == 0:
                log.image(state.step, "samples/grey-prediction-truth", sample_grid(final, samples[:4], args.size, precision))
            if state.step % args.ckpt_every == 0:
                state.elapsed = time.time() - t0
                _checkpoint(state, ckpt_path, d, args)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        state.elapsed = time.time() - t0
        if state.step != Progress.saved or not ckpt_path.is_file():
            _checkpoint(state, ckpt_path, d, args)

    # Report the throughput over all ranks; a signal ends the run here (exit 128 + its number).
    interrupted = d.any(stop.signum is not None, device) if d.enabled else stop.signum is not None
    ranks = d.gather(finish.rank_report(d, data, state, model))
    result = finish.throughput(log, state, ranks, speed.steady_rate(state, t0 + state.elapsed))
    if interrupted:
        return stopped(stop.signum or signal.SIGTERM, state.step, ckpt_path, d, log)
    if not d.main:
        d.close()
        return 0

    # Save (optionally in half precision), read back what was saved as users will, evaluate that, write the card.
    reloaded = finish.save_model(final, config, args, out, device)
    result.update(finish.summary(model, classes, data, d, ranks, precision, resumed=ckpt is not None))
    if val_sources:
        finish.final_evaluation(result, reloaded, val_sources, args, precision, log, state.step)
    if samples is not None:
        log.image(state.step, "samples/grey-prediction-truth", sample_grid(reloaded, samples[:4], args.size, precision))
    result.update(machine=finish.machine(device), wall_seconds=round(time.time() - t_start, 1),
                  command=command_line(argv, d.world), args=vars(args), init=init_desc, loss_curve=state.losses)
    finish.write_record(out, result)
    log.close()
    log.print(f"saved {out}")
    d.close()
    return finish.push(out, args) if args.push_to_hub else 0


# The training loop's parts, in its order.


def _batches(args: argparse.Namespace, d: dist.Dist, data: setup.Data, drawn: int, device: torch.device):
    """Endless ``(uint8 images, corrupt ids, grey ids)`` from the sampler's position ``drawn``."""
    sampler = EpochSampler(data.n_images, args.batch, seed=args.seed * 1_000 + d.rank, start=drawn)
    if data.images is not None:
        return ((data.images[idx], [], []) for idx in sampler.on(data.images.device))
    return iter(make_loader(data.shard, args.store_size, args.batch, args.workers, sampler, pin=device.type == "cuda"))


def _progress_bar(args: argparse.Namespace, d: dist.Dist, step: int):
    """tqdm over the steps (rank 0, with --progress), from where the run starts."""
    from tqdm.auto import tqdm

    return tqdm(total=args.steps or None, initial=step, desc="train", unit="step", disable=not (args.progress and d.main))


def _draw(batches, state: RunState, args: argparse.Namespace) -> torch.Tensor:
    """The next batch holding a usable image (the skipped files recorded); too many empty ones is an error."""
    for _ in range(MAX_EMPTY_BATCHES + 1):
        x, corrupt, grey = next(batches)
        state.drawn += 1
        state.skipped_ids["corrupt"].update(corrupt)
        state.skipped_ids["grey"].update(grey)
        if x.shape[0]:
            return x
    ids = state.skipped_ids
    raise TrainError(f"{MAX_EMPTY_BATCHES} batches in a row held no usable image ({len(ids['corrupt'])} corrupt, "
                     f"{len(ids['grey'])} grey files so far): check --data {args.data}")


def _inputs(x: torch.Tensor, args: argparse.Namespace, classes: ColorClasses, device: torch.device,
            gen: torch.Generator, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images -> the network's input L and the class targets, after the random crop
    and flip drawn from ``seed`` (the step's: a resumed run draws exactly the same)."""
    gen.manual_seed(seed)
    L, target = lab_targets(augment(x.to(device, non_blocking=True), args.size, generator=gen), classes)
    if device.type == "cuda":
        L = L.contiguous(memory_format=torch.channels_last)
    return L, target


def _step_seed(seed: int, rank: int, step: int) -> int:
    # Augmentation randomness is a function of (seed, rank, step): a resumed run
    # redraws exactly the crops and flips the killed one would have drawn.
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63)


def _log_step(log: Log, bar, args: argparse.Namespace, state: RunState, loss: float, weights: torch.Tensor,
              rate: float, t0: float) -> None:
    """Record the loss; show it (progress bar or a line) and write it to TensorBoard with the
    range of the rebalancing weights of the classes in the batch."""
    state.losses.append((state.step, loss))
    lr = state.optimizer.param_groups[0]["lr"]
    bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}")
    if not args.progress:
        log.print(f"step {state.step}{f'/{args.steps}' if args.steps else ''}  loss {loss:.4f}  "
                  f"lr {lr:.2e}  {rate:.1f} img/s  {time.time() - t0:.0f} s")
    log.scalars(state.step, "train", {"loss": loss, "lr": lr, "img_per_s": rate,
                                      "weight_min": weights.min().item(), "weight_max": weights.max().item()})


def _checkpoint(state: RunState, path: Path, d: dist.Dist, args: argparse.Namespace) -> None:
    """Save the run state (all ranks take part, rank 0 writes); main() then knows its step."""
    state.save(path, d, vars(args))
    Progress.saved = state.step


if __name__ == "__main__":
    raise SystemExit(main())
