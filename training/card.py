"""The model card (README.md of a model folder) written after training."""

from __future__ import annotations

from pathlib import Path

FRONT = """---
license: apache-2.0
library_name: ccc-nodes
pipeline_tag: image-to-image
tags: [image-colorization, ccc-plus-plus, pytorch]
---
"""


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.2 h``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _speed(r: dict) -> str:
    text = f"{r['img_per_s']:.0f} img/s overall"
    if r.get("img_per_s_steady"):
        text += f", {r['img_per_s_steady']:.0f} img/s steady after warm-up and compilation"
    return text


def _times(r: dict) -> str:
    """Training time (all sessions) and this process's wall time, each labelled: after
    a resume the first is the larger."""
    resumed = r.get("resumed", r["train_seconds"] > r["wall_seconds"])
    return (f"- Training time: {r['train_seconds']:.0f} s in all" + (" (over resumed sessions)" if resumed else "") +
            f"; wall time of the {'last (resumed) ' if resumed else ''}process: {r['wall_seconds']:.0f} s "
            "(data loading, class statistics, training, evaluation, saving).")


def limits(r: dict) -> list[str]:
    """The card's Limits section, from the run's own facts."""
    a, val = r["args"], r.get("val")
    n = r["train_images"]
    x = r["samples"] / n if n else 0
    passes = f", about {x:.0f} passes over the data" if x >= 10 else f", about {x:.2g} passes over the data" if n else ""
    lines = [
        f"- Trained on {n:,} photos from `{a['data']}` for {r['steps']:,} steps ({r['samples']:,} samples{passes}) "
        f"in {duration(r['train_seconds'])} of training, at {a['size']} px crops.",
    ]
    if val:
        lines.append(f"- Measured on {val['images']:,} validation images of `{a['val']}` (table above); "
                     "photos unlike the training data may be coloured less well.")
    else:
        lines.append("- No validation set was given: the model's colours were not measured.")
    lines.append("- These are this run's weights, not the paper's.")
    return lines


def _decoder(a: dict) -> str:
    if a.get("decoder", "table4") == "skip":
        return "skip connections from the encoder's stride-16, -8 and -4 features, bilinear upsampling"
    return "Table IV of the paper (nearest upsampling, no skip connections)"


def _grid(val: dict) -> str:
    """The grid ratio cell: prediction (ground truth); n/a for runs from before it was measured."""
    g, gt = val.get("grid"), val.get("grid_gt")
    if not isinstance(g, (int, float)) or g != g:
        return "n/a"
    return f"{g:.2f}" + (f" ({gt:.2f})" if isinstance(gt, (int, float)) and gt == gt else "")


def write_model_card(folder: Path, r: dict) -> None:
    a = r["args"]
    val = r.get("val")
    lines = [
        FRONT,
        f"# {a.get('name') or Path(folder).name}: a CCC++ colorization model",
        "",
        "Colour-classified colorization (CCC++): a grey image's L channel is classified per pixel into "
        f"K = {r['K']} a*b* colour classes (bin size {a['bin_size']}), decoded to a*b* and joined with the original L.",
        "",
        "## Architecture",
        f"- Encoder: `{a['encoder']}` (timm, one input channel), start: {r['init']}.",
        f"- Decoder: {_decoder(a)}, widths {a['decoder_channels']}; {r['parameters'] / 1e6:.2f}M parameters.",
        "- Classes: " + (f"kept from the training data's histogram at a minimum-count fraction of {a['min_fraction']:.3g}"
                         if a.get("classes", "data") == "data" else "all G^2 bins" if a["classes"] == "all"
                         else f"the kept set of `{a['classes']}`") + f" (K = {r['K']} of {r.get('num_bins', r['K'])}).",
        "",
        "## Training",
        f"- Data: {r['train_images']} photos from `{a['data']}` ({r['skipped']} skipped).",
        f"- Rebalancing `{a['rebalance']}`" + (f", p = {a['p']:g} %" if a["rebalance"] == "ccc" else "") +
        f"; Adam ({a.get('betas', '0.5,0.999')}), lr {a['lr']:g} with warm-up and {a.get('schedule', 'cosine')} schedule, batch {a['batch']}, "
        f"random resized {a['size']} px crops and flips.",
        "- Saved weights: " + (f"the exponential moving average of the training weights (decay {a['ema']:g}, warmed up)."
                               if a.get("ema") else "the last training weights (no moving average)."),
        f"- {r['steps']} steps, {r['samples']} samples ({_speed(r)}) on {r['machine']}"
        + (f" x {r['world_size']} processes (DDP)" if r.get("world_size", 1) > 1 else "")
        + (f", {r['precision']}" if "precision" in r else "") + ".",
        _times(r),
        f"- Weights saved as {a['save_dtype']}.",
        "",
        "Command:",
        "",
        f"    {r['command']}",
    ]
    if val:
        lines += [
            "",
            f"## Validation ({val['images']} images of `{a['val']}`, {a['size']} px, argmax decoding)",
            "",
            "| CF (GT) | CF | delta-CF | TAR % | CNR | CCAR % (GT) | PSNR dB | MSE | grid (GT) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {val['cf_gt']:.1f} | {val['cf']:.1f} | {val['delta_cf']:.1f} | {val['tar']:.1f} | {val['cnr']:.2f} | "
            f"{val['ccar']:.1f} ({val['ccar_gt']:.1f}) | {val['psnr']:.2f} | {val['mse']:.4f} | {_grid(val)} |",
            "",
            "CF: Hasler-Suesstrunk colourfulness (0..255 RGB); TAR, CNR, CCAR on class maps at 1/4 size "
            "(METHOD.md section 10); PSNR on RGB; grid: the change of a*b* across the lines of the 8-cell grid "
            "of the 1/4 output over the change elsewhere (blocks give well over 1, a natural image about 1).",
        ]
    lines += ["", "## Limits", *limits(r), ""]
    (Path(folder) / "README.md").write_text("\n".join(lines))
