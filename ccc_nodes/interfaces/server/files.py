"""The server's folders (input, output, temp, user) and the only ways in and out of them.

Every name a client sends goes through :meth:`Folders.resolve`, which refuses anything
that could leave its folder: ``..``, absolute paths, drive letters, backslashes, control
characters, hidden names, and symbolic links anywhere on the way. Files are written to a
temporary name in the same folder and renamed into place, so a reader never sees half a
file and a failed write leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FileError", "Folders", "atomic_write", "safe_parts"]

FOLDER_TYPES = ("input", "output", "temp")
_PART = re.compile(r"^[^\x00-\x1f\x7f/\\:*?\"<>|]{1,128}$")


class FileError(ValueError):
    """A client-supplied file name or folder was refused; the message says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def safe_parts(name: str, what: str = "name") -> list[str]:
    """Split a client path (``/``-separated) into parts that are each a plain file name."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise FileError(f"{what} must be a non-empty string of at most 512 characters")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise FileError(f"{what} {name!r} is absolute; give a name inside the folder")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.startswith(".") or part != part.strip() or not _PART.match(part):
            raise FileError(f"{what} {name!r} has a part {part!r} that is not a plain file or folder name")
    return parts


def atomic_write(path: Path, data: bytes | None = None, writer=None) -> None:
    """Write ``data`` (or call ``writer(tmp_path)``) to ``path`` via a temporary file + rename."""
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
        if writer is not None:
            writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Folders:
    """The server's working folders, all under ``base`` unless given.

    Arguments:
      base: parent of ``input/``, ``output/``, ``temp/``, ``user/`` (created if missing).
    """

    base: Path
    input: Path = field(init=False)
    output: Path = field(init=False)
    temp: Path = field(init=False)
    user: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base = Path(self.base).expanduser().resolve()
        for kind in (*FOLDER_TYPES, "user"):
            path = self.base / kind
            path.mkdir(parents=True, exist_ok=True)
            setattr(self, kind, path)
        (self.user / "default").mkdir(exist_ok=True)

    def root(self, kind: str | None) -> Path:
        kind = kind or "output"
        if kind not in FOLDER_TYPES:
            raise FileError(f"type must be one of {', '.join(FOLDER_TYPES)}, got {kind!r}")
        return getattr(self, kind)

    def resolve(self, root: Path, name: str, subfolder: str = "", *, must_exist: bool = False) -> Path:
        """``root/subfolder/name`` after checking every part; refuses links on the way."""
        parts = (safe_parts(subfolder, "subfolder") if subfolder else []) + safe_parts(name)
        path = root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise FileError(f"{'/'.join(parts)!r} goes through a link; links are not followed", 403)
        if os.path.commonpath((root, path.resolve())) != str(root):
            raise FileError(f"{'/'.join(parts)!r} leaves its folder", 403)
        if must_exist and not path.is_file():
            raise FileError(f"no file {'/'.join(parts)!r} in the {root.name} folder", 404)
        return path

    @staticmethod
    def in_the_way(root: Path, path: Path) -> str | None:
        """Why ``path`` (inside ``root``) cannot be written as a file: a folder has its name,
        or a file has the name of a folder on the way to it; None when nothing is in the way."""
        if path.is_dir():
            return f"{path.relative_to(root).as_posix()!r} is a folder"
        for parent in path.parents:
            if parent.is_relative_to(root) and parent.exists() and not parent.is_dir():
                return f"{parent.relative_to(root).as_posix()!r} is a file, not a folder"
        return None

    def list_images(self, kind: str = "input") -> list[str]:
        """Image files in a folder (recursively), as ``/``-separated names, sorted."""
        from ccc_nodes.core.images import IMAGE_SUFFIXES

        root = self.root(kind)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (Path(dirpath) / d).is_symlink())
            for f in filenames:
                p = Path(dirpath) / f
                if not f.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_symlink():
                    found.append(p.relative_to(root).as_posix())
        return sorted(found)
