"""Make docs/before_after.jpg: grey input | colorized by the embedded default | original.

    python docs/make_before_after.py
"""

from pathlib import Path

from PIL import Image, ImageDraw

from ccc_nodes import Colorizer

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("astronaut", "chelsea", "coffee", "rocket")
H = 200


def main() -> None:
    colorizer = Colorizer(device="cpu")
    rows = []
    for name in NAMES:
        grey = Image.open(ROOT / "examples" / "grey" / f"{name}.jpg")
        ref = Image.open(ROOT / "examples" / "reference" / f"{name}.jpg")
        out = colorizer(grey)
        w = round(grey.width * H / grey.height)
        rows.append([im.convert("RGB").resize((w, H), Image.LANCZOS) for im in (grey, out, ref)])
    width = max(sum(im.width for im in r) for r in rows) + 20
    canvas = Image.new("RGB", (width, 24 + len(rows) * (H + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 24
    for row in rows:
        x = 0
        for im in row:
            canvas.paste(im, (x, y))
            x += im.width + 10
        y += H + 6
    w0 = rows[0][0].width
    for i, label in enumerate(("grey input", "ccc colorize (embedded default)", "original")):
        draw.text((i * (w0 + 10) + 4, 6), label, fill="black")
    canvas.save(ROOT / "docs" / "before_after.jpg", quality=85)


if __name__ == "__main__":
    main()
