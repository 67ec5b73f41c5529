"""Per-worker ceilings: the watchdog and the kernel backstop stop a worker, never the service."""

from __future__ import annotations

import threading
import time

import httpx

from harness.server import Server


class HealthProbe:
    """Polls /healthz in a thread while a test runs; records failures and the slowest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failures = 0
        self.slowest_s = 0.0
        self.latencies_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.wait(0.05):
                start = time.monotonic()
                try:
                    ok = client.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.failures += not ok
                self.latencies_s.append(time.monotonic() - start)
                self.slowest_s = max(self.slowest_s, self.latencies_s[-1])


def test_worker_over_its_ceiling_is_killed_with_its_peak(server: Server) -> None:
    with HealthProbe(server.url) as health:
        task = server.submit("diag.alloc", {"mb": 400, "rate_mb_s": 200, "hold_s": 5}, ceiling_mb=150)
        done = server.wait(task["id"], timeout_s=30)
    assert done["state"] == "killed"
    assert done["reason"] == "memory_ceiling"
    assert done["ceiling_mb"] == 150
    assert 100 <= done["peak_rss_mb"] <= 150 * 1.2
    assert done["signal"] == 9
    assert health.failures == 0


def test_burst_allocation_is_stopped(server: Server) -> None:
    task = server.submit("diag.alloc", {"mb": 2000, "rate_mb_s": 0, "hold_s": 5}, ceiling_mb=200)
    done = server.wait(task["id"], timeout_s=30)
    assert done["state"] == "killed"
    assert done["reason"] == "memory_ceiling"
    assert done["peak_rss_mb"] >= 150


def test_grandchildren_count_against_the_ceiling(server: Server) -> None:
    with HealthProbe(server.url) as health:
        task = server.submit("diag.spawn", {"children": 3, "mb_each": 120, "hold_s": 10}, ceiling_mb=250)
        done = server.wait(task["id"], timeout_s=30)
    assert done["state"] == "killed"
    assert done["reason"] == "memory_ceiling"
    assert done["peak_rss_mb"] >= 200
    assert health.failures == 0


def test_within_ceiling_succeeds_and_estimate_is_learned(server: Server) -> None:
    before = server.memory()["estimates_mb"]["diag.alloc"]
    done = server.wait(server.submit("diag.alloc", {"mb": 120, "hold_s": 0.2})["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == {"allocated_mb": 120}
    assert done["peak_rss_mb"] >= 120
    after = server.memory()["estimates_mb"]["diag.alloc"]
    assert after > before
    assert after >= done["peak_rss_mb"]
