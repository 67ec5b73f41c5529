"""Where workers live: the zygote that forks them and, where the kernel allows, their memory cgroups.

The supervisor decides what runs; this module only makes processes exist, restarts a dead zygote,
and tells how the kernel saw them die.
"""

from __future__ import annotations

import asyncio
import logging

from supervisor.cgroups import WorkerCgroups
from supervisor.memory import MB
from supervisor.worker import RunningWorker
from supervisor.zygote import WorkerProcess, Zygote, ZygoteLostError

log = logging.getLogger(__name__)


class WorkerHost:
    def __init__(self, preload: tuple[str, ...], use_cgroups: bool) -> None:
        self.zygote = Zygote(preload)
        self._use_cgroups = use_cgroups
        self.cgroups: WorkerCgroups | None = None
        self._lock = asyncio.Lock()
        self._adopted: int | None = None
        self._pool_ooms_seen = 0

    async def start(self) -> None:
        if self._use_cgroups:
            self.cgroups = WorkerCgroups.open()
        await self._start_zygote()

    async def stop(self) -> None:
        await self.zygote.stop()
        if self.cgroups is not None:
            self.cgroups.close()

    async def ensure(self) -> bool:
        """Restart a dead zygote before anything is forked from it; False if it cannot start now."""
        async with self._lock:
            if self.zygote.alive():
                return True
            log.error("the zygote is gone; starting a new one")
            try:
                await self._start_zygote()
            except (ZygoteLostError, OSError) as exc:
                log.error("the zygote could not start: %s", exc)
                return False
            return True

    async def spawn(self, worker: RunningWorker, endpoint: str, threads: int) -> WorkerProcess:
        """Fork the worker, inside its own cgroup (limited to its ceiling) where there is one."""
        if self.cgroups is not None:
            name = f"task-{worker.routing_id.decode().replace(':', '-')}"
            worker.cgroup = self.cgroups.add(name, worker.ceiling_mb)
        cgroup = str(worker.cgroup.path) if worker.cgroup else None
        try:
            return await self.zygote.fork(worker.task_id, worker.attempt, endpoint, threads, cgroup)
        except BaseException:
            self.discard(worker)
            raise

    async def release(self, worker: RunningWorker) -> bool:
        """Remove the worker's cgroup; True if the kernel OOM-killed inside it (its ceiling)."""
        if worker.cgroup is None or self.cgroups is None:
            return False
        try:
            task_oom = worker.cgroup.oom_kills() > 0
        except OSError:
            task_oom = False
        await asyncio.to_thread(self.cgroups.remove, worker.cgroup)
        return task_oom

    def discard(self, worker: RunningWorker) -> None:
        if worker.cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(worker.cgroup)
            worker.cgroup = None

    def new_pool_oom(self) -> bool:
        """Whether the kernel OOM-killed in the pool since the last death attributed to it."""
        if self.cgroups is None:
            return False
        try:
            ooms = self.cgroups.pool.oom_kills()
        except OSError:
            return False
        if ooms <= self._pool_ooms_seen:
            return False
        self._pool_ooms_seen += 1
        return True

    def pool_working_set_mb(self) -> float | None:
        return self.cgroups.pool.working_set_bytes() / MB if self.cgroups is not None else None

    def set_pool_limit(self, limit_mb: float) -> None:
        if self.cgroups is None:
            return
        try:
            self.cgroups.set_pool_limit(limit_mb)
        except OSError as exc:
            log.debug("pool limit not updated: %s", exc)

    async def _start_zygote(self) -> None:
        await self.zygote.start()
        self._adopt_zygote()

    def _adopt_zygote(self) -> None:
        """Put the zygote in the workers' pool: what it allocates serving forks is the workers' share."""
        pid = self.zygote.pid
        if self.cgroups is None or pid is None or pid == self._adopted:
            return
        try:
            self.cgroups.adopt(pid)
            self._adopted = pid
        except OSError as exc:
            log.warning("zygote %d stays outside the workers' pool: %s", pid, exc)
