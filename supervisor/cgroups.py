"""The kernel backstop: a memory cgroup per worker, inside a pool cgroup for all workers.

    <service cgroup>            the container (e.g. 512 MB)
      memvisor-<pid>/           pool: every worker; its limit keeps the API's share out of reach
        task-<id>-<attempt>/    one worker's tree; its limit is the worker's ceiling
        task-spare-<id>-0/      a spare's, limited when a task takes the spare

Polling cannot stop a process that allocates a gigabyte between two samples; the kernel can. An OOM
inside a task cgroup is counted there (and reported as memory_ceiling), an OOM in the pool is
counted in the pool, and neither ever touches the container's own counter.
Only cgroup v1 hierarchies are written (v2 forbids processes beside child cgroups, which would mean
moving the API process itself); elsewhere the watchdog alone enforces ceilings.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from supervisor.kill import signal_pids
from supervisor.memory import Cgroup, own_cgroup
from workers.units import MB

log = logging.getLogger(__name__)

POOL_PREFIX = "memvisor-"
RMDIR_TRIES = 50


class WorkerCgroups:
    def __init__(self, pool: Cgroup) -> None:
        self.pool = pool

    @classmethod
    def open(cls) -> WorkerCgroups | None:
        """A pool under our own cgroup, or None (with the reason logged) where none can be made."""
        parent = own_cgroup()
        if parent is None or parent.version != 1:
            log.info("worker cgroups unavailable: no writable cgroup v1 memory hierarchy")
            return None
        remove_stale_pools(parent.path)
        path = parent.path / f"{POOL_PREFIX}{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.use_hierarchy").write_text("1")
        except OSError as exc:
            log.info("worker cgroups unavailable: %s", exc)
            return None
        return cls(Cgroup(1, path))

    def zygote_procs(self) -> Path:
        """Where the zygote writes its pid, first thing, to be in the pool before its imports."""
        return self.pool.path / "cgroup.procs"

    def adopt(self, pid: int) -> None:
        """Move the zygote into the pool: what it allocates serving forks is the workers' share."""
        self.zygote_procs().write_text(str(pid))

    def set_pool_limit(self, limit_mb: float) -> None:
        _write_limit(self.pool.path, limit_mb)

    def add(self, name: str, limit_mb: float | None) -> Cgroup | None:
        """A task cgroup limited to ``limit_mb`` (None: the pool's limit until ``set_limit``); the
        worker joins it itself, first thing after fork."""
        path = self.pool.path / name
        try:
            path.mkdir(exist_ok=True)
            if limit_mb is not None:
                _write_limit(path, limit_mb)
        except OSError as exc:
            log.warning("no task cgroup %s (%s); watchdog only", name, exc)
            _rmdir(path)
            return None
        return Cgroup(1, path)

    def set_limit(self, group: Cgroup, limit_mb: float) -> None:
        _write_limit(group.path, limit_mb)

    def remove(self, group: Cgroup) -> None:
        """Kill whatever is left in the group (escaped grandchildren included), then remove it."""
        _kill_all(group.path)
        _rmdir(group.path)

    def close(self) -> None:
        for child in self.pool.path.iterdir():
            if child.is_dir():
                self.remove(Cgroup(1, child))
        _rmdir(self.pool.path)


def _write_limit(path: Path, limit_mb: float) -> None:
    (path / "memory.limit_in_bytes").write_text(str(int(limit_mb * MB)))


def remove_stale_pools(parent: Path) -> None:
    """Pools left by a service that died without cleaning up (e.g. SIGKILL)."""
    for pool in parent.glob(f"{POOL_PREFIX}*"):
        owner = pool.name.removeprefix(POOL_PREFIX)
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            for child in [p for p in pool.iterdir() if p.is_dir()]:
                _kill_all(child)
                _rmdir(child)
            _rmdir(pool)


def _kill_all(path: Path) -> None:
    try:
        pids = Cgroup(1, path).pids()  # cgroup.procs reads the same in v1 and v2
    except OSError:
        return
    signal_pids(pids, signal.SIGKILL)


def _rmdir(path: Path) -> None:
    """rmdir fails while the kernel still holds a dying process in the group: retry briefly."""
    for _ in range(RMDIR_TRIES):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    log.warning("cgroup %s could not be removed", path)
