"""The container's memory as the supervisor accounts for it: what is not the workers', what the
workers hold, what the container uses, and where the guard and the pool's hard limit sit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe, Reading
from supervisor.host import WorkerHost
from supervisor.memory import process_tree, pss_mb
from supervisor.spares import Spares
from supervisor.worker import RunningWorker
from workers.units import MB

BASE_REFRESH_S = 1.0


class Accounting:
    def __init__(
        self,
        settings: SupervisorSettings,
        probe: ContainerProbe,
        host: WorkerHost,
        running: Callable[[], list[RunningWorker]],
        spares: Spares,
    ) -> None:
        self.settings = settings
        self.probe = probe
        self.host = host
        self._running = running
        self._spares = spares
        self._idle_base_mb: float | None = None
        self._base_read_mono = 0.0

    def base_mb(self) -> float:
        """What the container holds besides the workers, measured the same way in every mode.

        Inside a limiting cgroup: the container's usage less its droppable page cache, minus the
        workers' side. Where the pool cgroup exists that side is read from it; where no cgroup can be
        written (Render) it is the PSS of the zygote and everything below it, read while no worker
        runs (a running worker would land on the API's side; one still dying is below the zygote, and
        subtracted with it). Elsewhere: the PSS of the API process, the zygote and the spares, also
        read while idle (a worker shares the zygote's pages and would make its PSS, and so the budget,
        swing with load).
        """
        cgroup = self.probe.cgroup if self.probe.from_cgroup else None
        pool_mb = self.host.pool_unreclaimable_mb()
        if pool_mb is not None and cgroup is not None:
            return max(0.0, cgroup.unreclaimable_bytes() / MB - pool_mb)
        now = time.monotonic()
        stale = now - self._base_read_mono > BASE_REFRESH_S
        if self._idle_base_mb is None or (stale and not self._running()):
            tree = self._zygote_tree()
            if self._idle_base_mb is not None and set(tree) - {
                *self.host.zygote.pids(),
                *self._spares.pids(),
            }:
                return self._idle_base_mb  # a worker or its children are still dying: not idle yet
            helpers_mb = pss_mb(tree)
            if cgroup is not None:
                self._idle_base_mb = max(0.0, cgroup.unreclaimable_bytes() / MB - helpers_mb)
            else:
                self._idle_base_mb = pss_mb([os.getpid()]) + helpers_mb
            self._base_read_mono = now
        return self._idle_base_mb

    def _zygote_tree(self) -> list[int]:
        """The zygote and everything below it: spares, and any worker or orphaned grandchild still
        dying after its task ended (the zygote is their subreaper); none is the API's."""
        return [pid for root in self.host.zygote.pids() for pid in process_tree(root)]

    def committed_mb(self) -> float:
        """What workers hold: each running one its reservation, or its usage where that is larger,
        and each spare its own small share."""
        return sum(max(w.reserved_mb, w.rss_mb) for w in self._running()) + self._spares.reserved_mb()

    def usage(self, worker_pids: list[int] | None = None) -> Reading:
        """Without a cgroup, PSS over our processes: pages workers share with the zygote count once."""
        if worker_pids is None:
            worker_pids = [pid for w in self._running() for pid in w.last_pids]
        pids = [os.getpid(), *self.host.zygote.pids(), *self._spares.pids(), *worker_pids]
        return self.probe.usage(lambda: pss_mb(pids))

    def usage_mb(self, worker_pids: list[int]) -> float:
        return self.usage(worker_pids).value_mb

    def high_water_mb(self) -> float:
        return self.probe.limit.value_mb * self.settings.container_high_water_pct / 100

    def pool_limit_mb(self) -> float:
        """The pool may use what the API and zygote leave, minus half the margin kept for their growth."""
        return self.probe.limit.value_mb - self.base_mb() - self.settings.safety_margin_mb / 2
