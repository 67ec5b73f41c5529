"""Task outputs: the files a worker leaves in its task's output directory, listed in the task's result
and served by the API until their retention runs out.

Each task gets ``DATA_DIR/outputs/<task_id>/``, emptied before every attempt. When the task ends the
supervisor lists what is there (``settle``): a task that succeeded keeps its files and gets them in
``result["files"]``; any other ending removes the directory. A periodic sweep removes directories
older than ``OUTPUT_RETENTION_S``. Only plain files with safe names are listed, and only listed files
are served: a worker cannot expose a symbolic link, a hard link or a file outside its directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import mimetypes
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from supervisor.states import State
from supervisor.verdict import Verdict
from workers.names import is_plain_name

log = logging.getLogger(__name__)

SAFE_TASK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FALLBACK_MEDIA_TYPE = "application/octet-stream"
MAX_SWEEP_INTERVAL_S = 600.0


def task_dir(root: Path, task_id: str) -> Path:
    if not SAFE_TASK_ID.fullmatch(task_id):
        raise ValueError(f"not a task id: {task_id!r}")
    return root / task_id


def prepare(root: Path, task_id: str) -> Path:
    """An empty output directory for the task's next attempt (an earlier attempt's files go)."""
    directory = task_dir(root, task_id)
    shutil.rmtree(directory, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True, mode=0o711)  # workers pass through, never list
    directory.mkdir(mode=0o700)
    return directory


def media_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or FALLBACK_MEDIA_TYPE


def list_outputs(directory: Path) -> list[dict[str, Any]]:
    """Plain files with safe names, by name: ``name``, ``size_bytes``, ``media_type``."""
    files = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        # A hard link could name a file the worker did not write (the database): never list one.
        if is_plain_name(entry.name) and stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            size_bytes = info.st_size
            files.append({"name": entry.name, "size_bytes": size_bytes, "media_type": media_type(entry.name)})
    return sorted(files, key=lambda f: str(f["name"]))


def settle(root: Path, task_id: str, verdict: Verdict) -> Verdict:
    """The final verdict with the task's files in its result; the files go unless it succeeded."""
    directory = task_dir(root, task_id)
    if verdict.state != State.SUCCEEDED or not isinstance(verdict.result, dict):
        discard(root, task_id)
        return verdict
    files = list_outputs(directory)
    if not files:
        discard(root, task_id)
        if "files" not in verdict.result:
            return verdict
    else:
        with contextlib.suppress(OSError):
            os.utime(directory)  # retention counts from the task's end
    return dataclasses.replace(verdict, result={**verdict.result, "files": files})


def discard(root: Path, task_id: str) -> None:
    shutil.rmtree(task_dir(root, task_id), ignore_errors=True)


def listed_file(root: Path, task_id: str, name: str, result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The listing of ``name`` if the task's result names it and it is still there, else None."""
    if named_in(result, name) is None:
        return None
    present = {f["name"]: f for f in list_outputs(task_dir(root, task_id))}
    return present.get(name)


def named_in(result: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The listing of ``name`` in a task's result, if it has one under that (safe) name."""
    if not is_plain_name(name) or not isinstance(result, dict):
        return None
    listed = [f for f in result.get("files") or () if isinstance(f, dict) and f.get("name") == name]
    return listed[0] if listed else None


def expired(ages: Iterable[tuple[str, float]], now: float, retention_s: float, active: set[str]) -> list[str]:
    """Of (task id, last change), those older than the retention whose task is not running."""
    old = (task_id for task_id, changed in ages if now - changed >= retention_s)
    return sorted(task_id for task_id in old if task_id not in active)


def sweep(root: Path, retention_s: float, active: set[str], now: float | None = None) -> list[str]:
    """Remove expired output directories; returns the task ids whose files went."""
    now = time.time() if now is None else now
    ages = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(root):
            with contextlib.suppress(OSError):
                if SAFE_TASK_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                    ages.append((entry.name, entry.stat(follow_symlinks=False).st_mtime))
    gone = expired(ages, now, retention_s, active)
    for task_id in gone:
        discard(root, task_id)
    return gone


def sweep_interval_s(retention_s: float) -> float:
    return max(1.0, min(MAX_SWEEP_INTERVAL_S, retention_s / 2))


async def sweep_forever(root: Path, retention_s: float, active: Callable[[], set[str]]) -> None:
    """The periodic sweep, run by the supervisor for as long as it runs."""
    while True:
        try:
            gone = await asyncio.to_thread(sweep, root, retention_s, active())
            if gone:
                log.info("removed the outputs of %d task(s) past their retention", len(gone))
        except Exception:  # a sweep that fails once must not stop the next ones
            log.exception("output sweep failed")
        await asyncio.sleep(sweep_interval_s(retention_s))
