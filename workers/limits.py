"""Limits a worker puts on itself, without any privilege: the kernel's own per-process bounds.

- ``oom_score_adj``: any process may raise its own (never lower it again), so workers, spares and the
  zygote make themselves the kernel's first choice and the API process its last.
- ``RLIMIT_DATA`` (Linux >= 4.7): private writable mappings past the limit fail with ENOMEM, which
  Python raises as MemoryError. It counts reserved-but-untouched memory too (thread stacks, numpy's
  untouched arrays), so the limit is the process's data size when it takes its task plus what its
  ceiling leaves above its resident size, plus a slack for the reservations its libraries make later.
  It is per process: a worker's children inherit it each, and the watchdog bounds their sum.
"""

from __future__ import annotations

import contextlib
import os
import resource

from workers.units import MB

WORKER_OOM_SCORE_ADJ = 1000  # the kernel's first choice
ZYGOTE_OOM_SCORE_ADJ = 900  # before the API, after any worker: it only forks
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def raise_oom_score(value: int) -> None:
    """Raise this process's oom_score_adj (a no-op where it is already higher or not writable)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/oom_score_adj", "r+") as f:
        if int(f.read()) < value:
            f.seek(0)
            f.write(str(value))


def data_limit_bytes(data_bytes: int, rss_bytes: int, ceiling_mb: float, slack_mb: float) -> int:
    """The RLIMIT_DATA that lets a process grow to its ceiling (and its libraries reserve ``slack_mb``
    more), but no further: pure, for the property tests."""
    headroom_bytes = max(0, int(ceiling_mb * MB) - rss_bytes)
    return data_bytes + headroom_bytes + int(slack_mb * MB)


def limit_data(ceiling_mb: float, slack_mb: float) -> int | None:
    """Set this process's RLIMIT_DATA (soft and hard) from its ceiling; returns the limit in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        rss_bytes, data_bytes = int(fields[1]) * _PAGE_BYTES, int(fields[5]) * _PAGE_BYTES
        limit = data_limit_bytes(data_bytes, rss_bytes, ceiling_mb, slack_mb)
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    except (OSError, ValueError, IndexError):
        return None
    return limit


def apply_task_limits(limits: dict[str, float | None] | None) -> None:
    """The limits the supervisor sent with the task (none where it sent none)."""
    if limits and limits.get("data_slack_mb") is not None and limits.get("ceiling_mb"):
        limit_data(float(limits["ceiling_mb"] or 0), float(limits["data_slack_mb"] or 0))


def release_frames(exc: BaseException) -> None:
    """After a MemoryError, drop what the failed frames still hold, so that the answer can be sent."""
    if isinstance(exc, MemoryError) and exc.__traceback__ is not None:
        import traceback

        traceback.clear_frames(exc.__traceback__)
