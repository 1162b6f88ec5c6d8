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
        f"- Decoder: Table IV of the paper, widths {a['decoder_channels']}; {r['parameters'] / 1e6:.2f}M parameters.",
        "- Classes: " + (f"kept from the training data's histogram at a minimum-count fraction of {a['min_fraction']:.3g}"
                         if a.get("classes", "data") == "data" else "all G^2 bins" if a["classes"] == "all"
                         else f"the kept set of `{a['classes']}`") + f" (K = {r['K']} of {r.get('num_bins', r['K'])}).",
        "",
        "## Training",
        f"- Data: {r['train_images']} photos from `{a['data']}` ({r['skipped']} skipped).",
        f"- Rebalancing `{a['rebalance']}`" + (f", p = {a['p']:g} %" if a["rebalance"] == "ccc" else "") +
        f"; Adam ({a.get('betas', '0.5,0.999')}), lr {a['lr']:g} with warm-up and {a.get('schedule', 'cosine')} schedule, batch {a['batch']}, "
        f"random resized {a['size']} px crops and flips.",
        f"- {r['steps']} steps, {r['samples']} samples in {r['train_seconds']:.0f} s of training "
        f"({r['img_per_s']:.0f} img/s), {r['wall_seconds']:.0f} s wall time in all, on {r['machine']}"
        + (f" x {r['world_size']} processes (DDP)" if r.get("world_size", 1) > 1 else "")
        + (f", {r['precision']}" if "precision" in r else "") + ".",
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
            "| CF (GT) | CF | delta-CF | TAR % | CNR | CCAR % (GT) | PSNR dB | MSE |",
            "|---|---|---|---|---|---|---|---|",
            f"| {val['cf_gt']:.1f} | {val['cf']:.1f} | {val['delta_cf']:.1f} | {val['tar']:.1f} | {val['cnr']:.2f} | "
            f"{val['ccar']:.1f} ({val['ccar_gt']:.1f}) | {val['psnr']:.2f} | {val['mse']:.4f} |",
            "",
            "CF: Hasler-Suesstrunk colourfulness (0..255 RGB); TAR, CNR, CCAR on class maps at 1/4 size "
            "(METHOD.md section 10); PSNR on RGB.",
        ]
    lines += ["", "## Limits", "Trained briefly on a few thousand photos: colours are plausible but often muted or blotchy; "
              "it is a demonstration model, not the paper's Places365 weights.", ""]
    (Path(folder) / "README.md").write_text("\n".join(lines))
