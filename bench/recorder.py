"""Memory over time: a thread that polls the container's cgroup and (for memvisor) GET /admin/workers
every ~100 ms. It doubles as a liveness probe: every failed or slow answer is counted."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from harness.cgroup import LimitedCgroup
from workers.units import MB

PERIOD_S = 0.1


class MemoryRecorder(threading.Thread):
    def __init__(self, group: LimitedCgroup | str, admin: httpx.Client | None = None) -> None:
        super().__init__(name="bench-recorder", daemon=True)
        self.group = group if isinstance(group, LimitedCgroup) else None
        self.admin = admin
        self.samples: list[dict[str, Any]] = []
        self.failures = 0
        self.slowest_s = 0.0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(PERIOD_S):
            sample: dict[str, Any] = {"t": time.time()}
            if self.group is not None:
                sample["usage_mb"] = round(int(self.group.read("memory.usage_in_bytes")) / MB, 1)
            if self.admin is not None:
                sample["workers"] = self._workers()
            self.samples.append(sample)

    def _workers(self) -> list[dict[str, Any]] | None:
        assert self.admin is not None
        started = time.monotonic()
        try:
            response = self.admin.get("/admin/workers", timeout=5)
            response.raise_for_status()
        except httpx.HTTPError:
            self.failures += 1
            return None
        finally:
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
        keep = ("pid", "task_id", "kind", "rss_mb", "ceiling_mb")
        return [{k: w[k] for k in keep} for w in response.json()]

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)
