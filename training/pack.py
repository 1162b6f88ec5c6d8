"""Pack an image folder into one compact tar of re-encoded JPEGs (for moving data sets).

    python -m training.pack ../shared/data/train train.tar --size 224 --quality 72 --max-mb 48

Images are resized (shorter side), centre-cropped to a square and re-encoded; with
``--max-mb`` a seeded random sample is taken until the archive would pass that size.
"""

from __future__ import annotations

import argparse
import io
import random
import tarfile
from pathlib import Path

from PIL import Image, ImageOps
from tqdm.auto import tqdm

from training.data import list_sources


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--max-mb", type=float, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="store the original bytes, do not re-encode")
    a = p.parse_args(argv)
    sources = list_sources(a.src)
    random.Random(a.seed).shuffle(sources)
    budget = a.max_mb * 1e6 if a.max_mb else float("inf")
    total, n, bad = 0, 0, 0
    with tarfile.open(a.out, "w") as tar:
        for src in tqdm(sources, desc="pack", unit="img"):
            try:
                data = src.read()
                if not a.keep:
                    with Image.open(io.BytesIO(data)) as im:
                        im = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (a.size, a.size), Image.BICUBIC)
                        buf = io.BytesIO()
                        im.save(buf, "JPEG", quality=a.quality)
                        data = buf.getvalue()
            except Exception:  # noqa: BLE001 - unreadable files are counted, not fatal
                bad += 1
                continue
            if total + len(data) + 1024 > budget:
                break
            info = tarfile.TarInfo(Path(src.name).stem + ".jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            total += len(data) + 1024
            n += 1
    print(f"{a.out}: {n} images, {total / 1e6:.1f} MB, {bad} unreadable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
