"""Pack an image folder into compact tar archives of re-encoded JPEGs (for moving data sets).

    python -m training.pack ../shared/data/train train.tar --size 224 --quality 72 --max-mb 48
    python -m training.pack places365/train places.tar --shard-size 10000   # places-000.tar, places-001.tar, ...

Images are resized (shorter side), centre-cropped to a square and re-encoded (JPEG, or
WebP with ``--format webp``: about a third smaller at the same quality setting); with
``--max-mb`` a seeded random sample is taken until the archives would pass that size.
Member names keep each image's path relative to the source (``class/00000001.jpg``),
so files of the same name in different folders stay apart. Archives are written to
temporary files and renamed when complete: an interrupted pack leaves no partial tar.
The result is read by ``--data`` of the training commands (one tar, or the printed
``{000..K}`` range of shards).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import re
import signal
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from PIL import Image, ImageOps
from tqdm.auto import tqdm

from training.data import Source, list_sources

__all__ = ["member_names", "pack"]



def _member_bytes(info: tarfile.TarInfo) -> int:
    """Bytes a member takes in a tar: its header blocks (a PAX header too for long names)
    and its data padded to whole blocks."""
    header = len(info.tobuf(tarfile.DEFAULT_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return header + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _archive_bytes(members: int) -> int:
    """Size of a tar file whose members take ``members`` bytes: two zero blocks at its end,
    then padding to whole records (what ``TarFile.close`` writes)."""
    return -(-(members + 2 * tarfile.BLOCKSIZE) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _parts(src: Source) -> tuple[str, ...]:
    """The path of an image as folder parts: a tar member sits in a folder named after its tar."""
    if src.member is None:
        return Path(os.path.abspath(src.path)).parts
    tar = Path(os.path.abspath(src.path))
    return (*tar.with_suffix("").parts, *PurePosixPath(src.member).parts)


def _clean(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_+-]", "_", part) or "_"


def member_names(sources: Sequence[Source], keep_suffix: bool = False, root: str | Path | None = None,
                 suffix: str = ".jpg") -> list[str]:
    """Unique tar member names: each image's path relative to ``root`` (default: the
    sources' common folder), every part reduced to ``[A-Za-z0-9_+-]`` (dots too, so a
    WebDataset key is the whole path), suffix ``suffix`` or with ``keep_suffix`` the
    file's own (lower case)."""
    parts = [_parts(s) for s in sources]
    common = os.path.commonpath([os.path.join(*p[:-1]) for p in parts]) if parts else ""
    if root is not None and Path(common).is_relative_to(os.path.abspath(root)):
        common = os.path.abspath(root)
    depth = len(Path(common).parts) if common else 0
    names, used = [], set()
    for p in parts:
        last = PurePosixPath(p[-1])
        ext = last.suffix.lower() if keep_suffix else suffix
        stem = "/".join([*(_clean(x) for x in p[depth:-1]), _clean(last.stem)])
        name, n = stem + ext, 1
        while name in used:  # parts that differed only in characters replaced above
            name, n = f"{stem}-{n}{ext}", n + 1
        used.add(name)
        names.append(name)
    return names


FORMATS = {"jpeg": ("JPEG", ".jpg", {}), "webp": ("WEBP", ".webp", {"method": 6})}  # --format: PIL name, suffix, options


def _encode(src: Source, size: int, quality: int, keep: bool, fmt: str = "jpeg") -> bytes:
    data = src.read()
    if keep:
        return data
    with Image.open(io.BytesIO(data)) as im:
        im = ImageOps.fit(ImageOps.exif_transpose(im).convert("RGB"), (size, size), Image.BICUBIC)
        buf = io.BytesIO()
        name, _, options = FORMATS[fmt]
        im.save(buf, name, quality=quality, **options)
        return buf.getvalue()


def shard_paths(out: Path, count: int) -> tuple[list[Path], str]:
    """``out`` = ``DIR/STEM.tar`` -> ``count`` paths ``DIR/STEM-000.tar ...`` and the brace
    pattern naming them all (``DIR/STEM-{000..K}.tar``)."""
    width = max(3, len(str(count - 1)))
    paths = [out.with_name(f"{out.stem}-{i:0{width}d}.tar") for i in range(count)]
    pattern = str(out.with_name(f"{out.stem}-{{{0:0{width}d}..{count - 1:0{width}d}}}.tar"))
    return paths, pattern


def pack(sources: Sequence[Source], out: Path, size: int = 256, quality: int = 85, max_mb: float = 0,
         shard_size: int = 0, keep: bool = False, progress: bool = True,
         root: str | Path | None = None, fmt: str = "jpeg") -> tuple[list[Path], int, int, int]:
    """Write ``sources`` (in the given order) to ``out`` or, with ``shard_size``, to shards
    of that many images; member names from :func:`member_names` (relative to ``root``).
    Returns (archives written, images, bytes, unreadable). With ``max_mb`` the archives'
    exact sizes stay within it. Nothing is left behind when no image could be written or
    on any error or interruption."""
    budget = max_mb * 1e6 if max_mb else float("inf")
    names = member_names(sources, keep_suffix=keep, root=root, suffix=FORMATS[fmt][1])
    temps: list[tuple[tarfile.TarFile, str]] = []
    closed, current, n, bad = 0, 0, 0, 0  # bytes of finished archives, of the current one's members

    def new_archive() -> tarfile.TarFile:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        tar = tarfile.open(fileobj=os.fdopen(fd, "wb"), mode="w")  # noqa: SIM115 - closed below, open across images
        temps.append((tar, tmp))
        return tar

    try:
        tar = None
        for src, name in tqdm(list(zip(sources, names, strict=True)), desc="pack", unit="img", disable=not progress):
            try:
                data = _encode(src, size, quality, keep, fmt)
            except Exception:  # noqa: BLE001 - unreadable files are counted, not fatal
                bad += 1
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            starts = tar is None or bool(shard_size and n % shard_size == 0)
            before = closed + (_archive_bytes(current) if starts and tar is not None else 0)
            if before + _archive_bytes((0 if starts else current) + _member_bytes(info)) > budget:
                break
            if starts:
                closed, current = before, 0
                tar = new_archive()
            tar.addfile(info, io.BytesIO(data))
            current += _member_bytes(info)
            n += 1
        for t, _ in temps:
            t.close()  # writes the end-of-archive blocks; the file object stays open
            t.fileobj.flush()
            os.fsync(t.fileobj.fileno())
            t.fileobj.close()
        if not n:
            return [], 0, 0, bad
        finals = shard_paths(out, len(temps))[0] if shard_size else [out]
        mode = 0o666 & ~_umask()
        for (_, tmp), final in zip(temps, finals, strict=True):
            os.chmod(tmp, mode)
            os.replace(tmp, final)
        temps.clear()
        return finals, n, closed + _archive_bytes(current), bad
    finally:
        for t, tmp in temps:
            t.fileobj.close()
            Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _error(msg: str, code: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="images: folder (searched recursively), .tar, .txt file list, or glob / brace range")
    p.add_argument("out", help="archive to write, NAME.tar (with --shard-size: NAME-000.tar, NAME-001.tar, ...)")
    p.add_argument("--size", type=int, default=256, help="side of the square each image is resized and cropped to (px)")
    p.add_argument("--quality", type=int, default=85, help="quality of the re-encoded images, 1..100")
    p.add_argument("--format", choices=sorted(FORMATS), default="jpeg", help="format of the re-encoded images")
    p.add_argument("--max-mb", type=float, default=0,
                   help="stop before the archives pass this many MB (0: no limit); the images are a seeded sample")
    p.add_argument("--shard-size", type=int, default=0, metavar="N",
                   help="write shards of N images each instead of one tar (0: one tar)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that picks and orders the images")
    p.add_argument("--keep", action="store_true", help="store the original bytes, do not re-encode")
    a = p.parse_args(argv)
    out = Path(a.out)
    if out.suffix != ".tar":
        return _error(f"{a.out}: the archive name must end in .tar (that is what --data reads)")
    if a.size < 1 or not 1 <= a.quality <= 100 or a.max_mb < 0 or a.shard_size < 0:
        return _error("--size must be positive, --quality 1..100, --max-mb and --shard-size not negative")
    if out.is_dir():
        return _error(f"{a.out} is a folder; give the archive's file name")
    try:
        sources = list_sources(a.src)
    except (FileNotFoundError, NotADirectoryError, tarfile.TarError, OSError) as e:
        return _error(str(e))
    if not sources:
        return _error(f"source {a.src}: no images found")
    random.Random(a.seed).shuffle(sources)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so the temporary files go too
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written, n, total, bad = pack(sources, out, a.size, a.quality, a.max_mb, a.shard_size, a.keep,
                                      root=a.src if Path(a.src).is_dir() else None, fmt=a.format)
    except OSError as e:
        return _error(f"could not write {a.out}: {e}", 1)
    if not written:
        return _error(f"none of the {len(sources)} images of {a.src} could be read" if bad else
                      f"--max-mb {a.max_mb:g} is smaller than the first image; nothing written")
    where = shard_paths(out, len(written))[1] if a.shard_size else str(out)
    print(f"{where}: {n} images in {len(written)} archive(s), {total / 1e6:.1f} MB, {bad} unreadable")
    if a.shard_size:
        print(f"use it as --data '{where}'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
