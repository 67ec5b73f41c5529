"""Where workers live: the zygote that forks them and, where the kernel allows, their memory cgroups.

The supervisor decides what runs; this module only makes processes exist, restarts a dead zygote,
and tells how the kernel saw them die.
"""

from __future__ import annotations

import asyncio
import logging

from supervisor.backstop import open_backstop
from supervisor.cgroups import WorkerCgroups
from supervisor.errors import ZygoteLostError
from supervisor.memory import Cgroup
from supervisor.privileges import Privileges
from supervisor.worker import RunningWorker
from supervisor.zygote import WorkerProcess, Zygote
from workers import protocol
from workers.units import MB

SPARE_ATTEMPT = 0  # a spare's identity is its own, not a task's: no attempt of any task is 0

log = logging.getLogger(__name__)


class WorkerHost:
    def __init__(self, preload: tuple[str, ...], use_cgroups: bool, privileges: Privileges) -> None:
        self.privileges = privileges
        self.zygote = Zygote(preload, privileges.zygote_env(), privileges.policy.to_json())
        self._use_cgroups = use_cgroups
        self.cgroups: WorkerCgroups | None = None
        self._lock = asyncio.Lock()
        self._adopted: int | None = None
        self._pool_ooms_seen = 0

    async def start(self) -> None:
        if self._use_cgroups:
            self.cgroups = open_backstop()
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
        worker.cgroup = self._new_cgroup(worker.routing_id, worker.ceiling_mb)
        try:
            network = self.privileges.needs_network(worker.kind)
            return await self._fork(
                worker.task_id, worker.attempt, worker.cgroup, endpoint, threads, network=network
            )
        except BaseException:
            self.remove_cgroup(worker.cgroup)
            worker.cgroup = None
            raise

    async def spawn_spare(
        self, identity: str, endpoint: str, threads: int
    ) -> tuple[WorkerProcess, Cgroup | None]:
        """Fork a worker that waits for a task; its cgroup is limited once it gets one. Spares have no
        network where namespaces isolate it: only kinds that need none take them."""
        cgroup = self._new_cgroup(protocol.routing_id(identity, SPARE_ATTEMPT), None)
        try:
            process = await self._fork(
                identity, SPARE_ATTEMPT, cgroup, endpoint, threads, spare=True, network=False
            )
        except BaseException:
            self.remove_cgroup(cgroup)
            raise
        return process, cgroup

    def limit_cgroup(self, cgroup: Cgroup | None, limit_mb: float) -> None:
        if cgroup is not None and self.cgroups is not None:
            self.cgroups.set_limit(cgroup, limit_mb)

    def _new_cgroup(self, routing_id: bytes, limit_mb: float | None) -> Cgroup | None:
        if self.cgroups is None:
            return None
        return self.cgroups.add(f"task-{routing_id.decode().replace(':', '-')}", limit_mb)

    async def _fork(
        self,
        identity: str,
        attempt: int,
        cgroup: Cgroup | None,
        endpoint: str,
        threads: int,
        *,
        spare: bool = False,
        network: bool = True,
    ) -> WorkerProcess:
        path = str(cgroup.path) if cgroup else None
        return await self.zygote.fork(
            identity, attempt, endpoint, threads, path, spare=spare, network=network
        )

    async def release(self, worker: RunningWorker) -> None:
        """Kill what is left of the worker's tree and remove its cgroup."""
        if worker.cgroup is not None:
            await asyncio.to_thread(self.remove_cgroup, worker.cgroup)
            worker.cgroup = None

    def remove_cgroup(self, cgroup: Cgroup | None) -> None:
        if cgroup is not None and self.cgroups is not None:
            self.cgroups.remove(cgroup)

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

    def pool_unreclaimable_mb(self) -> float | None:
        return self.cgroups.pool.unreclaimable_bytes() / MB if self.cgroups is not None else None

    def set_pool_limit(self, limit_mb: float) -> None:
        if self.cgroups is None:
            return
        try:
            self.cgroups.set_pool_limit(limit_mb)
        except OSError as exc:
            log.debug("pool limit not updated: %s", exc)

    async def _start_zygote(self) -> None:
        await self.zygote.start(self.cgroups.zygote_procs() if self.cgroups is not None else None)
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
