"""The watchdog: a thread that samples every worker tree and stops the ones that must stop.

It runs apart from the event loop so that a busy loop never delays a kill. Each round it
- measures each worker tree (its RSS, plus its descendants' private pages) and kills a tree at its
  ceiling (reason memory_ceiling), or one whose task cgroup saw a kernel OOM kill;
- escalates SIGTERM to SIGKILL after the grace period, and enforces timeouts and start deadlines;
- guards the container: above the high-water mark it kills one victim (reason container_pressure).
It samples faster while a worker is near its ceiling, and faster still while one grows towards it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from supervisor.config import SupervisorSettings
from supervisor.memory import tree_mb
from supervisor.states import Reason
from supervisor.worker import RunningWorker

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(
        self,
        settings: SupervisorSettings,
        container_usage_mb: Callable[[list[int]], float],
        high_water_mb: Callable[[], float],
        guard_interval_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self._usage_mb = container_usage_mb
        self._high_water_mb = high_water_mb
        # Reading the container's usage may be costly (PSS walks every mapping): not every round.
        self._guard_interval_s = guard_interval_s
        self._guarded_mono = 0.0
        self._workers: dict[bytes, RunningWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memvisor-watchdog", daemon=True)
        self.rounds = 0
        self.cpu_s = 0.0  # the watchdog thread's own CPU time, read at the end of each round
        self.native_id: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def add(self, worker: RunningWorker) -> None:
        with self._lock:
            self._workers[worker.routing_id] = worker

    def remove(self, worker: RunningWorker) -> None:
        with self._lock:
            self._workers.pop(worker.routing_id, None)

    def cost(self) -> dict[str, float | int | None]:
        """What the watchdog has cost so far: its rounds and its thread's CPU seconds."""
        return {"rounds": self.rounds, "cpu_s": round(self.cpu_s, 3), "tid": self.native_id}

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        interval_s = self.settings.poll_interval_ms / 1000
        while not self._stop.wait(interval_s):
            try:
                interval_s = self.sample()
            except Exception:  # the watchdog must outlive any one bad reading
                log.exception("watchdog round failed")
                interval_s = self.settings.poll_interval_ms / 1000
            self.cpu_s = time.thread_time()

    def sample(self) -> float:
        """One round; returns how long to wait before the next."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            self._check(worker)
        self._guard(workers)
        self.rounds += 1
        return self._next_interval_s(workers)

    def _next_interval_s(self, workers: list[RunningWorker]) -> float:
        """Slow while nothing is near its ceiling; faster near one; and, for a tree growing fast,
        about half the time it would take to reach its ceiling, so that it is caught near it."""
        interval_s = self.settings.poll_interval_ms / 1000
        for worker in workers:
            if worker.rss_mb >= worker.ceiling_mb * self.settings.fast_poll_ratio:
                interval_s = min(interval_s, self.settings.fast_poll_interval_ms / 1000)
            interval_s = min(interval_s, worker.seconds_to_ceiling() / 2)
        return max(interval_s, self.settings.min_poll_interval_ms / 1000)

    def _check(self, worker: RunningWorker) -> None:
        """Enforce one worker's limits."""
        worker.last_pids = worker.tree_pids()
        worker.observe(tree_mb(worker.pid, worker.last_pids))
        if worker.rss_mb >= worker.ceiling_mb or worker.cgroup_oom():
            if worker.kill_reason is None:
                log.warning(
                    "task %s pid %d: %.0f MB at ceiling %.0f MB, killing",
                    worker.task_id,
                    worker.pid,
                    worker.rss_mb,
                    worker.ceiling_mb,
                )
            worker.kill(Reason.MEMORY_CEILING)
        self._enforce_time(worker)

    def _enforce_time(self, worker: RunningWorker) -> None:
        now = time.monotonic()
        if worker.term_sent_mono is not None:
            if now - worker.term_sent_mono >= self.settings.term_grace_s:
                worker.escalate()
        elif worker.age_s >= worker.timeout_s and worker.outcome is None:
            log.warning("task %s pid %d: timed out after %.1f s", worker.task_id, worker.pid, worker.age_s)
            worker.terminate(Reason.TIMEOUT)
        elif not worker.ready and worker.age_s >= self.settings.worker_start_timeout_s:
            log.error("task %s pid %d: worker never became ready", worker.task_id, worker.pid)
            worker.kill(Reason.CRASHED)

    def _guard(self, workers: list[RunningWorker]) -> None:
        now = time.monotonic()
        if not workers or now - self._guarded_mono < self._guard_interval_s:
            return  # without workers there is nothing the guard could do
        self._guarded_mono = now
        usage_mb = self._usage_mb([pid for w in workers for pid in w.last_pids])
        if usage_mb < self._high_water_mb():
            return
        if any(w.sigkill_sent for w in workers):
            return  # a victim is already dying: give the kernel a moment to take its memory back
        victim = choose_victim(workers)
        if victim is not None:
            log.warning(
                "container at %.0f MB (high water %.0f MB): killing task %s pid %d",
                usage_mb,
                self._high_water_mb(),
                victim.task_id,
                victim.pid,
            )
            victim.kill(Reason.CONTAINER_PRESSURE)


def choose_victim(workers: list[RunningWorker]) -> RunningWorker | None:
    """The worker furthest over its estimate, then the youngest (it has lost the least work)."""
    if not workers:
        return None
    return max(workers, key=lambda w: (w.rss_mb - w.reserved_mb, -w.age_s))
