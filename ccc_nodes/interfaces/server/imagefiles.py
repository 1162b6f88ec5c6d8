"""Images in and out of the server's folders: ``GET /view`` and ``POST /upload/image``.

Both stay inside their folders (:meth:`Folders.resolve`), serve and take images only, and
hold uploads to the pixel cap; an upload is written beside its target and linked or
renamed into place, so nothing half-written is ever seen under its name.
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import os
import shutil
import uuid
from pathlib import Path

from fastapi import Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ccc_nodes.core.images import IMAGE_SUFFIXES, ImageError, check_frames, open_image
from ccc_nodes.interfaces.server.files import FileError, Folders, sha256_file
from ccc_nodes.interfaces.server.graph import error_answer
from ccc_nodes.interfaces.server.image_nodes import MAX_FRAMES

__all__ = ["store_upload", "upload_image", "view_image"]


def view_image(folders: Folders, params: dict[str, str], max_pixels: int) -> Response:
    """``GET /view``: an image of the input, output or temp folder, as stored or as ComfyUI's
    ``preview`` (webp/jpeg, quality) and ``channel`` (rgba, rgb, a) ask."""
    filename = params.get("filename", "")
    kind = params.get("type") or "output"
    for tag in ("input", "output", "temp"):  # ComfyUI's annotated names: "x.png [output]"
        if filename.endswith(f" [{tag}]"):
            filename, kind = filename[: -len(tag) - 3], tag
    path = folders.resolve(folders.root(kind), filename, params.get("subfolder", ""), must_exist=True)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileError(f"{filename!r} is not an image; /view serves images only", 403)
    preview, channel = params.get("preview"), params.get("channel", "rgba")
    if not preview and channel == "rgba":
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                            headers={"Content-Disposition": f'filename="{path.name}"'})
    im = open_image(path, max_pixels)
    fmt, quality = "png", 90
    if preview:
        fmt, *rest = preview.split(";")
        fmt = fmt if fmt in ("webp", "jpeg") else "webp"
        if rest and rest[-1].isascii() and rest[-1].isdigit() and len(rest[-1]) <= 3:
            quality = min(max(int(rest[-1]), 1), 100)
    if channel == "a":
        im = im.convert("RGBA").getchannel("A") if "A" in im.getbands() else im.convert("L").point(lambda _: 255)
    elif channel == "rgb" or fmt == "jpeg":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format=fmt.upper(), quality=quality)
    return Response(buf.getvalue(), media_type=f"image/{fmt}", headers={"Content-Disposition": f'filename="{path.name}"'})


async def upload_image(folders: Folders, request: Request, max_pixels: int) -> Response:
    """``POST /upload/image``: a multipart ``image`` stored in its folder (a new name unless
    ``overwrite``; the same image already there keeps its name)."""
    form = await request.form()
    image = form.get("image")
    if image is None or not hasattr(image, "read") or not getattr(image, "filename", ""):
        return JSONResponse(error_answer("invalid_upload", "send the file as multipart field 'image' with a file name"), 400)
    kind = str(form.get("type") or "input")
    subfolder = str(form.get("subfolder") or "")
    root = folders.root(kind)
    name = Path(str(image.filename).replace("\\", "/")).name  # browsers may send a path
    target = folders.resolve(root, name, subfolder)
    if target.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileError(f"{name!r}: only images ({', '.join(sorted(IMAGE_SUFFIXES))}) are accepted")
    if (blocked := folders.in_the_way(root, target)) is not None:
        raise FileError(f"cannot upload {name!r} there: {blocked}", 409)
    overwrite = str(form.get("overwrite", "")).lower() in ("true", "1")
    # copying, decoding and hashing take a while on a large image: in a worker thread, so
    # that the event loop goes on serving every other request meanwhile
    final = await asyncio.to_thread(store_upload, image.file, target, name, overwrite, max_pixels)
    return JSONResponse({"name": final.name, "subfolder": subfolder, "type": kind})


def store_upload(source, target: Path, name: str, overwrite: bool, max_pixels: int) -> Path:
    """Copy an upload to a temporary file beside ``target``, check it is a real image
    within the pixel cap, and link or rename it into place; the name it got."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".part-{uuid.uuid4().hex}{target.suffix}"
    try:
        with open(tmp, "wb") as f:
            source.seek(0)
            shutil.copyfileobj(source, f, 1 << 20)
        try:
            # a real, readable image whose frames (as LoadImage takes them) are within the pixel cap together
            check_frames(tmp, max_pixels, MAX_FRAMES)
            open_image(tmp, max_pixels)
        except ImageError as e:
            raise FileError(f"{name!r}: {str(e).removeprefix(str(tmp) + ': ')}") from e
        final = target
        if overwrite:
            os.replace(tmp, final)
        else:
            stem, suffix, i = target.stem, target.suffix, 1
            while True:
                if final.is_file() and sha256_file(final) == sha256_file(tmp):
                    break  # the same image is already there: reuse its name
                try:
                    os.link(tmp, final)  # atomic and never overwrites
                    break
                except FileExistsError:
                    final = target.with_name(f"{stem} ({i}){suffix}")
                    i += 1
    finally:
        tmp.unlink(missing_ok=True)
    return final
