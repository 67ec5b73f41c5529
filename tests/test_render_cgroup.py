"""The Render test: the whole service inside a real 512 MB memory cgroup, under an allocation storm.

The cgroup's own OOM-kill counter must stay 0 (the kernel never had to kill inside the container),
its peak usage must stay under 512 MB, the server must answer throughout, and every task must end
with a final state and, unless it succeeded, a reason.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.cgroup import LimitedCgroup
from tests.harness import Server
from tests.test_memory_enforcement import HealthProbe

LIMIT_MB = 512
FINAL = {"succeeded", "failed", "killed", "timed_out", "cancelled"}


@pytest.mark.cgroup
def test_thirty_allocation_bombs_in_512_mb(render_cgroup: LimitedCgroup, make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(wrap=render_cgroup.wrap()).start()
    memory = server.memory()
    assert memory["limit_mb"] == LIMIT_MB and memory["limit_source"] == "cgroup v1"
    ceiling_mb = min(350, int(memory["budget_mb"]) - 40)  # the budget moves as the API's RSS does
    rates = [0, 1000, 1000, 100, 300]  # 0 = as fast as the worker can touch pages

    def submit(i: int) -> str:
        payload = {"mb": 300, "rate_mb_s": rates[i % len(rates)], "hold_s": 0.5}
        return server.submit("diag.alloc", payload, ceiling_mb=ceiling_mb)["id"]

    with HealthProbe(server.url) as health, ThreadPoolExecutor(30) as pool:
        ids = list(pool.map(submit, range(30)))
        done = [server.wait(task_id, timeout_s=300) for task_id in ids]
    states = Counter((t["state"], t["reason"]) for t in done)
    print(f"outcomes {dict(states)}; max usage {render_cgroup.max_usage_mb:.0f} MB")
    assert render_cgroup.oom_kills == 0
    assert render_cgroup.max_usage_mb < LIMIT_MB
    assert health.failures == 0
    assert all(t["state"] in FINAL for t in done)
    assert all(t["reason"] for t in done if t["state"] != "succeeded")
    assert server.client.get("/healthz").status_code == 200
