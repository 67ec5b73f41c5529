"""Prometheus exposition of the supervisor's figures, read at scrape time (nothing is double-kept)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor.core import Supervisor

MEMORY_GAUGES = {
    "limit_mb": "Container memory limit",
    "usage_mb": "Container memory in use (cgroup working set, or the sum over our processes)",
    "budget_mb": "Memory the admission controller may hand to workers",
    "committed_mb": "Memory running workers hold (reservation or usage, the larger)",
    "api_and_zygote_mb": "Memory of everything in the container but the workers",
    "high_water_mb": "Container usage at which the guard kills a worker",
}


class SupervisorCollector(Collector):
    def __init__(self, supervisor: Supervisor, stats: dict[str, Any]) -> None:
        self.supervisor = supervisor
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        memory = self.supervisor.memory_report()
        for key, doc in MEMORY_GAUGES.items():
            yield GaugeMetricFamily(f"memvisor_memory_{key}", doc, value=memory[key])
        yield GaugeMetricFamily("memvisor_queue_depth", "Tasks waiting", value=self.stats["queue_depth"])
        yield from self._workers()
        yield from self._tasks()

    def _workers(self) -> Iterator[Metric]:
        workers = self.supervisor.workers()
        yield GaugeMetricFamily("memvisor_workers_running", "Running workers", value=len(workers))
        rss = GaugeMetricFamily(
            "memvisor_worker_rss_mb", "RSS of a worker's tree", labels=["kind", "task_id"]
        )
        ceiling = GaugeMetricFamily(
            "memvisor_worker_ceiling_mb", "A worker's ceiling", labels=["kind", "task_id"]
        )
        for worker in workers:
            rss.add_metric([worker.kind, worker.task_id], worker.rss_mb)
            ceiling.add_metric([worker.kind, worker.task_id], worker.ceiling_mb)
        yield rss
        yield ceiling

    def _tasks(self) -> Iterator[Metric]:
        stats = self.stats
        tasks = CounterMetricFamily("memvisor_tasks", "Tasks by kind and state", labels=["kind", "state"])
        for kind, states in stats["tasks_by_kind"].items():
            for state, count in states.items():
                tasks.add_metric([kind, state], count)
        yield tasks
        kills = CounterMetricFamily("memvisor_kills", "Kills and timeouts by reason", labels=["reason"])
        for reason, count in stats["kills_by_reason"].items():
            kills.add_metric([reason], count)
        yield kills
        for figure in ("queue_wait_s", "run_s"):
            gauge = GaugeMetricFamily(
                f"memvisor_task_{figure}", f"{figure} of recent tasks", labels=["quantile"]
            )
            for name, value in stats[figure].items():
                if value is not None:
                    gauge.add_metric([name], value)
            yield gauge


def exposition(supervisor: Supervisor, stats: dict[str, Any]) -> bytes:
    """``stats`` as ``Supervisor.stats`` reads them (from the database, off the event loop)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(supervisor, stats))
    return generate_latest(registry)
