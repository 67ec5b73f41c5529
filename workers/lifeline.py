"""How the zygote and its workers end: their exit codes, and never outliving the process that started
them (an unsupervised worker would hold memory no one accounts for)."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1

EXIT_OK = 0
EXIT_NO_TASK = 3  # the supervisor never sent the task (or the worker's zygote was already gone)
EXIT_NO_ACK = 4  # the result may not have reached the supervisor
EXIT_SOFTWARE = 70  # sysexits' EX_SOFTWARE: a forked child failed before its worker could start


def die_with_parent(orphan_exit_code: int | None = None) -> None:
    """SIGKILL this process when its parent dies. The kernel clears the request on a credential change,
    so a worker asks again after switching users. A parent that died before the request was made never
    sends the signal: with ``orphan_exit_code``, a process already re-parented to init exits with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if orphan_exit_code is not None and os.getppid() == 1:
        os._exit(orphan_exit_code)
