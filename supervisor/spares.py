"""Spare workers: forked, placed in their cgroup and connected before any task needs them.

A fresh process per task is the isolation memvisor promises. Its price on the task's path is a
fork, joining its cgroup (about 14 ms on cgroup v1 here, more than the fork itself) and a ZeroMQ
handshake. A spare pays all three ahead of time and waits; a task takes it, and the next
spare is forked in the background. A spare still runs exactly one task and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from dataclasses import dataclass

from supervisor.errors import ZygoteLostError
from supervisor.host import SPARE_ATTEMPT, WorkerHost
from supervisor.kill import signal_tree
from supervisor.memory import Cgroup
from supervisor.zygote import WorkerProcess
from workers import protocol

log = logging.getLogger(__name__)

# What a waiting spare holds of its own (smaps_rollup Private_Dirty, measured here: ~3 MB); the rest
# of its RSS is the zygote's pages, shared copy-on-write. Admission reserves this much per spare.
SPARE_RESERVE_MB = 4.0
RETRY_S = 1.0  # after a failed fork, or a spare that died young: no fork loop
YOUNG_S = 1.0
DISPOSE_WAIT_S = 5.0


@dataclass
class Spare:
    routing_id: bytes
    process: WorkerProcess | None = None
    cgroup: Cgroup | None = None
    ready_pid: int | None = None
    forked_mono: float = 0.0

    @property
    def ready(self) -> bool:
        """Forked (the zygote told its pid), connected (it said ready) and still alive."""
        return (
            self.process is not None and self.ready_pid == self.process.pid and not self.process.exited.done()
        )


class Spares:
    def __init__(
        self, host: WorkerHost, endpoint: str, threads: int, size: int, start_timeout_s: float
    ) -> None:
        self.host = host
        self.endpoint = endpoint
        self.threads = threads
        self.size = size
        self.start_timeout_s = start_timeout_s
        self._spares: dict[bytes, Spare] = {}  # the event loop's alone
        # What the watchdog thread reads: a tuple the event loop replaces whenever a spare's process
        # comes or goes, so that the thread never iterates the dict while the loop changes it.
        self._pids: tuple[int, ...] = ()
        self._filler: asyncio.Task[None] | None = None
        self._disposing: set[asyncio.Task[None]] = set()
        self._closed = False

    def owns(self, routing_id: bytes) -> bool:
        return routing_id in self._spares

    def on_ready(self, routing_id: bytes, pid: object) -> None:
        spare = self._spares.get(routing_id)
        if spare is None or not isinstance(pid, int) or spare.ready_pid is not None:
            log.warning("spare %r: unexpected ready from pid %s; ignored", routing_id[:64], pid)
            return
        spare.ready_pid = pid

    def take(self, ceiling_mb: float) -> Spare | None:
        """A ready spare, its cgroup limited to ``ceiling_mb``, now the caller's (and so is its exit);
        None if no spare is ready."""
        spare = next((s for s in self._spares.values() if s.ready), None)
        if spare is None:
            return None
        self._forget(spare)
        self.refill()
        try:
            self.host.limit_cgroup(spare.cgroup, ceiling_mb)
        except OSError as exc:  # e.g. the spare already holds more than the ceiling: never use it
            log.warning("spare %s not used: its cgroup limit could not be set (%s)", spare.ready_pid, exc)
            self._dispose_later(spare)
            return None
        return spare

    def pids(self) -> tuple[int, ...]:
        """The spares' pids as of the last change: safe to read from any thread."""
        return self._pids

    def ready_pids(self) -> list[int]:
        """The spares a task would take now (the event loop's view)."""
        return [s.ready_pid for s in self._spares.values() if s.ready and s.ready_pid is not None]

    def _publish(self) -> None:
        self._pids = tuple(s.process.pid for s in self._spares.values() if s.process is not None)

    def _forget(self, spare: Spare) -> None:
        self._spares.pop(spare.routing_id, None)
        self._publish()

    def reserved_mb(self) -> float:
        """The next task takes a spare, and its own reservation covers that spare: count the others."""
        return SPARE_RESERVE_MB * max(0, len(self._spares) - 1)

    def refill(self) -> None:
        """Fork spares up to ``size``, one at a time, in the background; a spare that never said
        ready within the start timeout is killed and replaced."""
        now = time.monotonic()
        for spare in list(self._spares.values()):
            if spare.process and not spare.ready and now - spare.forked_mono > self.start_timeout_s:
                log.warning("spare worker %d never said ready; killed", spare.process.pid)
                self._dispose_later(spare)
        if self._closed or len(self._spares) >= self.size or (self._filler and not self._filler.done()):
            return
        self._filler = asyncio.create_task(self._fill(), name="memvisor-spares")

    async def close(self) -> None:
        """Kill every spare and remove its cgroup; none is forked after this."""
        self._closed = True
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        for spare in list(self._spares.values()):
            await self._dispose(spare)
        await asyncio.gather(*self._disposing, return_exceptions=True)

    async def _fill(self) -> None:
        while not self._closed and len(self._spares) < self.size:
            if not await self.host.ensure() or not await self._fork_one():
                await asyncio.sleep(RETRY_S)

    async def _fork_one(self) -> bool:
        spare = Spare(protocol.routing_id(f"spare-{uuid.uuid4().hex}", SPARE_ATTEMPT))
        self._spares[spare.routing_id] = spare  # before the fork: its ready may beat the zygote's reply
        identity = spare.routing_id.decode().rsplit(":", 1)[0]
        try:
            spare.process, spare.cgroup = await self.host.spawn_spare(identity, self.endpoint, self.threads)
        except (ZygoteLostError, OSError, TimeoutError) as exc:
            log.warning("no spare worker forked: %s", exc)
            self._forget(spare)
            return False
        spare.forked_mono = time.monotonic()
        self._publish()
        spare.process.exited.add_done_callback(lambda _: self._on_exit(spare))
        return True

    def _on_exit(self, spare: Spare) -> None:
        """A spare died before any task took it (killed, or its zygote died): replace it."""
        if spare.routing_id not in self._spares:
            return  # taken (its exit belongs to its task now), or being disposed of
        log.warning("spare worker %s exited before it was used", spare.process and spare.process.pid)
        self._dispose_later(spare)
        young = time.monotonic() - spare.forked_mono < YOUNG_S
        asyncio.get_running_loop().call_later(RETRY_S if young else 0.0, self.refill)

    def _dispose_later(self, spare: Spare) -> None:
        self._forget(spare)
        task = asyncio.create_task(self._dispose(spare))
        self._disposing.add(task)
        task.add_done_callback(self._disposing.discard)

    async def _dispose(self, spare: Spare) -> None:
        self._forget(spare)
        process = spare.process
        if process is not None and not process.exited.done():
            signal_tree(process.pid, [process.pid], signal.SIGKILL)  # the rest dies with its cgroup
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.exited), DISPOSE_WAIT_S)
        await asyncio.to_thread(self.host.remove_cgroup, spare.cgroup)
