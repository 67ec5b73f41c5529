"""One supervisor per data directory, held with an flock on ``DATA_DIR/supervisor.lock``.

Two supervisors on one data directory (an app run with several uvicorn workers) would each believe
they own the whole memory budget and each take the other's running tasks for interrupted ones. The
kernel drops the lock when its process dies, however it dies, so a crash never leaves it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from workers.errors import ConfigError

LOCK_NAME = "supervisor.lock"


class DataDirInUseError(ConfigError):
    """Another live process runs a supervisor on this data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock until ``release`` (or this process's end); refuse if another process holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUseError(
                f"DATA_DIR {self.path.parent.resolve()} is in use by another memvisor supervisor "
                f"(pid {holder}): run one process per data directory (uvicorn --workers 1), "
                "or give each its own MEMVISOR_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor releases the flock

    def check(self) -> None:
        """Refuse now if another process holds the lock, without keeping it."""
        self.acquire()
        self.release()
