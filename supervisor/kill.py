"""Signalling a process tree: the one way the supervisor stops a worker, a spare, or whatever is left in
a task's cgroup. A process that is already gone is no error: it is what the signal was for."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def signal_tree(leader: int, pids: Iterable[int], sig: int) -> None:
    """The leader's process group (a worker calls setsid first thing), then each of ``pids``: the
    processes that left the group, and the leader itself before its setsid (ESRCH for the group)."""
    if leader <= 0:
        return  # not forked yet: killpg(0) would signal our own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, sig)
    signal_pids(pids, sig)
