"""Make docs/before_after.jpg: grey input | colorized by the embedded default | original.

    python docs/make_before_after.py
    # a candidate model beside the default (any model folder or Hub repo id):
    python docs/make_before_after.py --compare runs/cpu-skip --label "skip decoder (CPU fine-tune)" \\
        --out docs/decoder_comparison.jpg
    # the default before and after its last replacement (the rule's reference, read from git)
    python docs/make_before_after.py --previous
    # any columns, in order: LABEL=MODEL[@DECODING] ("default": the embedded model)
    python docs/make_before_after.py --column "before=runs/judge/reference" --column "after=default" \\
        --column "after, confident decoding=default@confident"
"""

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from ccc_nodes import Colorizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # training/ (the rule's reference) is read from the checkout
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
H = 200


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", help="a second model (folder or Hub repo id), shown beside the default")
    p.add_argument("--label", default=None, help="its column's title (default: the --compare value)")
    p.add_argument("--column", action="append", default=[], metavar="LABEL=MODEL[@DECODING]",
                   help="a column of its own (repeatable, in order; replaces the default's column)")
    p.add_argument("--previous", action="store_true", help="a column before the default's: the model it replaced "
                   "(training/recipes/default_rule.py's reference, from the repository's history)")
    p.add_argument("--out", default=str(ROOT / "docs" / "before_after.jpg"))
    args = p.parse_args(argv)
    colorizers = []
    if args.previous:
        import tempfile

        from training.recipes.default_rule import reference_model

        previous = reference_model(Path(tempfile.mkdtemp()) / "previous")
        colorizers.append(("previous default (GPU, Table IV)", Colorizer(previous, device="cpu")))
    for column in args.column:
        label, _, spec = column.rpartition("=")
        model, _, decoding = spec.partition("@")
        colorizers.append((label or spec, Colorizer(None if model == "default" else model, device="cpu",
                                                    decoding=decoding or None)))
    if not args.column:
        colorizers.append(("ccc colorize (embedded default)", Colorizer(device="cpu")))
    if args.compare:
        colorizers.append((args.label or args.compare, Colorizer(args.compare, device="cpu")))
    labels = ["grey input", *(label for label, _ in colorizers), "original"]
    rows = []
    for name in NAMES:
        grey = Image.open(ROOT / "examples" / "grey" / f"{name}.jpg")
        ref = Image.open(ROOT / "examples" / "reference" / f"{name}.jpg")
        outs = [c(grey) for _, c in colorizers]
        w = round(grey.width * H / grey.height)
        rows.append([im.convert("RGB").resize((w, H), Image.LANCZOS) for im in (grey, *outs, ref)])
    cols = [max(row[j].width for row in rows) for j in range(len(labels))]  # each column as wide as its widest
    lefts = [sum(cols[:j]) + 10 * j for j in range(len(cols))]
    canvas = Image.new("RGB", (lefts[-1] + cols[-1], 24 + len(rows) * (H + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            canvas.paste(im, (lefts[j] + (cols[j] - im.width) // 2, 24 + i * (H + 6)))
    for j, label in enumerate(labels):
        draw.text((lefts[j] + 4, 6), label, fill="black")
    canvas.save(args.out, quality=85)


if __name__ == "__main__":
    main()
