"""Half a CPU, as Render's starter plan gives: /healthz keeps answering well inside Render's health
check (5 s timeout, traffic removed after 15 s of failures) while workers start, allocate and exit,
and SIGTERM lets a running task finish and the service exit 0 within Render's 30 s grace.

Render mode only (uid 10001, no writable cgroup, a cgroup v1 CPU quota of 0.5 CPU: harness/cgroup.py).
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.cgroup import Mode, make_mode
from harness.server import Server, until
from supervisor.store import Store
from tests.test_memory_enforcement import HealthProbe

HEALTHZ_DEADLINE_S = 2.5  # half of Render's health-check timeout
RENDER_GRACE_S = 30
IDLE_PROBES = 40


@pytest.fixture
def render_mode(tmp_path: Path) -> Iterator[Mode]:
    mode = make_mode("render", tmp_path / "service")
    if isinstance(mode, str):
        pytest.skip(mode)
    yield mode
    mode.close()


def _busy(server: Server) -> list[str]:
    """Forty tasks at once: short allocators (each a fork, a 60 MB touch and an exit) and sleepers."""
    jobs = [("diag.alloc", {"mb": 60, "rate_mb_s": 0, "hold_s": 0.2})] * 30
    jobs += [("diag.sleep", {"seconds": 1})] * 10
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda job: server.submit(*job)["id"], jobs))


def _figures(latencies_s: list[float]) -> str:
    return f"p50 {statistics.median(latencies_s) * 1000:.0f} ms, max {max(latencies_s) * 1000:.0f} ms"


@pytest.mark.cgroup
def test_healthz_and_the_sigterm_drain_on_half_a_cpu(render_mode: Mode, make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env=render_mode.env, data_dir=render_mode.data_dir, wrap=render_mode.wrap())
    server.start(ready_timeout_s=60)
    assert server.memory()["enforcement"]["cpu_quota"] == 0.5
    until(server.zygote_pid, 30, "the zygote")

    with HealthProbe(server.url) as idle:
        until(lambda: len(idle.latencies_s) >= IDLE_PROBES, 60, f"{IDLE_PROBES} probes of the idle service")
    with HealthProbe(server.url) as busy:
        ids = _busy(server)
        done = [server.wait(task_id, timeout_s=300) for task_id in ids]
    assert all(task["state"] == "succeeded" for task in done), [t for t in done if t["state"] != "succeeded"]

    # The drain: a task running when SIGTERM comes finishes, and the service exits 0 in Render's grace.
    running = server.submit("diag.sleep", {"seconds": 3})["id"]
    holding = server.submit("diag.alloc", {"mb": 100, "rate_mb_s": 0, "hold_s": 2}, ceiling_mb=150)["id"]
    until(
        lambda: all(server.task(i)["state"] == "running" for i in (running, holding)), 30, "two tasks to run"
    )
    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.proc is not None
    assert server.proc.wait(RENDER_GRACE_S) == 0
    drain_s = time.monotonic() - sent

    print(
        f"/healthz at 0.5 CPU: idle {_figures(idle.latencies_s)} ({len(idle.latencies_s)} probes); "
        f"while {len(ids)} tasks ran {_figures(busy.latencies_s)} ({len(busy.latencies_s)} probes); "
        f"SIGTERM to exit 0: {drain_s:.1f} s"
    )
    assert idle.failures == busy.failures == 0
    assert max(idle.latencies_s + busy.latencies_s) < HEALTHZ_DEADLINE_S
    assert drain_s < RENDER_GRACE_S
    store = Store(f"sqlite:///{server.data_dir / 'memvisor.db'}")
    try:
        rows = [store.get(task_id) for task_id in (running, holding)]
        assert [row.state if row else None for row in rows] == ["succeeded", "succeeded"], rows
    finally:
        store.close()
