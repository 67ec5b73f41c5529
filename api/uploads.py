"""Uploaded files: streamed into the task's spool directory under safe names, within limits.

Files never travel through the worker socket: the worker reads them from the spool by name.
"""

from __future__ import annotations

import errno
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import imagesize
from starlette.datastructures import UploadFile

from workers.errors import MemvisorError
from workers.names import plain_name
from workers.units import MB

CHUNK_BYTES = 1 << 20
IMAGE_FORMATS = ("png", "jpeg", "gif", "bmp", "tiff", "webp")


class UploadError(MemvisorError):
    """A refused upload; ``status`` is the HTTP status it maps to."""

    status = 422


class UploadTooLargeError(UploadError):
    status = 413


class UnsupportedMediaError(UploadError):
    status = 415


class SpoolFullError(UploadError):
    status = 507


def new_task_id() -> str:
    return uuid.uuid4().hex


async def save_uploads(files: Sequence[UploadFile], spool: Path, max_mb: float) -> list[str]:
    """Write every file into ``spool`` (created here); on any refusal nothing is left behind."""
    names: list[str] = []
    try:
        spool.mkdir(parents=True)
        for index, upload in enumerate(files):
            name = plain_name(upload.filename, f"upload-{index}")  # workers/names.py
            if name in names:
                name = f"{index}-{name}"
            await _copy(upload, spool / name, int(max_mb * MB))
            names.append(name)
    except OSError as exc:
        shutil.rmtree(spool, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise SpoolFullError("no space left in the spool directory; retry later") from None
        raise
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise
    return names


async def _copy(upload: UploadFile, target: Path, max_bytes: int) -> None:
    size = 0
    with target.open("wb") as out:
        while chunk := await upload.read(CHUNK_BYTES):
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLargeError(f"file {upload.filename!r} exceeds the {max_bytes // MB} MB limit")
            out.write(chunk)
    if size == 0:
        raise UploadError(f"file {upload.filename!r} is empty")


def check_image(path: Path, max_pixels: int) -> None:
    """Refuse a non-image or a decompression bomb from its header alone, before any decoder runs."""
    try:
        width, height = imagesize.get(path)
    except (OSError, ValueError):
        width, height = -1, -1
    if width <= 0 or height <= 0:
        formats = ", ".join(IMAGE_FORMATS)
        raise UnsupportedMediaError(f"{path.name}: not a readable image (expected one of {formats})")
    if width * height > max_pixels:
        raise UploadTooLargeError(
            f"{path.name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )
