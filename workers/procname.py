"""Process names (what ps -o comm and top show), so that operators can tell the processes apart."""

from __future__ import annotations

import ctypes

PR_SET_NAME = 15
ZYGOTE_NAME = "memvisor-zygote"
WORKER_NAME = "memvisor-worker"
SPARE_NAME = "memvisor-spare"  # forked ahead of need, waiting for its task


def set_process_name(name: str) -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
