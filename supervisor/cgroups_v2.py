"""The kernel backstop in a delegated cgroup v2 subtree (rootless podman, a systemd user slice with
``Delegate=yes``, a container started with a writable ``--cgroupns`` mount).

    <service cgroup>/           delegated to our uid; subtree_control +memory
      memvisor-api/             leaf: the API process (and whatever else was in the service cgroup)
      memvisor-<pid>/           pool: memory.max keeps the API's share out of reach; subtree_control +memory
        zygote/                 leaf: the zygote
        task-<id>-<attempt>/    leaf: one worker's tree; memory.max is its ceiling, memory.oom.group 1

cgroup v2 forbids processes in a cgroup whose controllers are enabled for its children (the
no-internal-processes rule), so before ``+memory`` can be written to the service cgroup's
subtree_control, every process in it moves into a leaf of its own; the pool holds the zygote in a leaf
for the same reason. Everything else is as in v1 (supervisor/cgroups.py): the worker joins its task
cgroup first thing after fork, and an OOM kill counted in the task cgroup's memory.events is its
ceiling (``memory_ceiling``).

No cgroup v2 memory controller can be mounted on the machines this was written on (their hierarchy is
v1): this backend is tested against a fake cgroupfs tree only (tests/test_cgroups_v2.py), which checks
what is written where and in what order, not how a kernel answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from supervisor.cgroups import POOL_PREFIX, WorkerCgroups, remove_stale_pools
from supervisor.memory import Cgroup
from workers.units import MB

log = logging.getLogger(__name__)

API_LEAF = "memvisor-api"
ZYGOTE_LEAF = "zygote"


@dataclass(frozen=True)
class PoolCgroup(Cgroup):
    """The pool's own OOMs. v2's memory.events is hierarchical (a kill at a worker's ceiling counts in
    every ancestor too), so the pool reads memory.events.local: how often its own limit made the
    kernel kill."""

    def oom_kills(self) -> int:
        return self.counters("memory.events.local").get("oom", 0)


class DelegatedCgroups(WorkerCgroups):
    """``WorkerCgroups`` in a delegated v2 subtree: same interface, leaves for every process."""

    @classmethod
    def open_in(cls, service: Cgroup) -> DelegatedCgroups | None:
        """Move our processes into a leaf, enable the memory controller below, make the pool; None
        (with the reason logged) where the kernel refuses any step."""
        if service.path.name == API_LEAF:  # started again in the same process: already in its leaf
            service = Cgroup(2, service.path.parent, service.root)
        remove_stale_pools(service.path)
        pool = service.path / f"{POOL_PREFIX}{os.getpid()}"
        try:
            _move_all(service.path, service.path / API_LEAF)
            _enable_memory(service.path)
            pool.mkdir(exist_ok=True)
            _enable_memory(pool)
            (pool / ZYGOTE_LEAF).mkdir(exist_ok=True)
        except OSError as exc:
            log.info("worker cgroups unavailable in the delegated cgroup v2 subtree: %s", exc)
            for path in (pool / ZYGOTE_LEAF, pool):  # nothing half made (the API's leaf may stay)
                with contextlib.suppress(OSError):
                    path.rmdir()
            return None
        return cls(PoolCgroup(2, pool, service.root))

    def zygote_procs(self) -> Path:
        return self.pool.path / ZYGOTE_LEAF / "cgroup.procs"

    def adopt(self, pid: int) -> None:
        _write(self.zygote_procs(), str(pid))

    def add(self, name: str, limit_mb: float | None) -> Cgroup | None:
        path = self.pool.path / name
        try:
            path.mkdir(exist_ok=True)
            # An OOM at the worker's ceiling kills its whole tree, grandchildren included.
            _write(path / "memory.oom.group", "1")
            if limit_mb is not None:
                _write_max(path, limit_mb)
        except OSError as exc:
            log.warning("no task cgroup %s (%s); watchdog only", name, exc)
            self.remove(Cgroup(2, path, self.pool.root))
            return None
        return Cgroup(2, path, self.pool.root)

    def set_pool_limit(self, limit_mb: float) -> None:
        _write_max(self.pool.path, limit_mb)

    def set_limit(self, group: Cgroup, limit_mb: float) -> None:
        _write_max(group.path, limit_mb)

    def remove(self, group: Cgroup) -> None:
        """cgroup.kill (Linux >= 5.14) kills every process of the group at once, even one forking at
        that moment; the v1 way (a SIGKILL per listed pid) follows for older kernels."""
        with contextlib.suppress(OSError):
            _write(group.path / "cgroup.kill", "1")
        super().remove(group)


def _move_all(service: Path, leaf: Path) -> None:
    """Every process of the service cgroup into ``leaf``, one pid per write (as cgroup.procs takes them)."""
    leaf.mkdir(exist_ok=True)
    for pid in (service / "cgroup.procs").read_text().split():
        _write(leaf / "cgroup.procs", pid)


def _enable_memory(path: Path) -> None:
    """The memory controller for ``path``'s children (a no-op where it is already on)."""
    _write(path / "cgroup.subtree_control", "+memory")


def _write_max(path: Path, limit_mb: float) -> None:
    _write(path / "memory.max", str(int(limit_mb * MB)))


def _write(path: Path, text: str) -> None:
    """Every write of this backend goes through here (the tests record them, in order)."""
    path.write_text(text)
