"""The Render test: the whole service inside a real 512 MB memory cgroup under the hostile minute, in
Render mode (uid 10001, no writable cgroup, 0.5 CPU) and in lab mode (root, a cgroup per worker).

The cgroup's own OOM-kill counter must stay 0 (with memory.oom.group=1, as Kubernetes sets it, one
kill would restart the instance), its peak usage must stay under 512 MB, the same API process must
answer throughout, every task must end with a final state and a reason, and the tasks that fit must
succeed.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.cgroup import Mode
from harness.hostile_mix import BIG_CEILING_MB, mix, outcome
from harness.server import Server, until
from tests.test_memory_enforcement import HealthProbe

LIMIT_MB = 512
FINAL = {"succeeded", "failed", "killed", "timed_out", "cancelled"}
# One seed here; MEMVISOR_HOSTILE_SEED replays another (bench/ runs several).
SEED = int(os.environ.get("MEMVISOR_HOSTILE_SEED", "11"))


def _oom_score_adj(pid: int | None) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


@pytest.mark.cgroup
def test_hostile_minute_in_512_mb(service_mode: Mode, make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(
        env=service_mode.env, data_dir=service_mode.data_dir, wrap=service_mode.wrap()
    )
    server.start(ready_timeout_s=60)
    assert server.proc is not None
    api_pid = server.proc.pid
    memory = server.memory()
    assert memory["limit_mb"] == LIMIT_MB and memory["limit_source"] == "cgroup v1"
    enforcement = memory["enforcement"]
    assert enforcement["uid"] == (10001 if service_mode.name == "render" else 0)
    assert enforcement["worker_cgroups"] == (service_mode.name == "lab")
    assert memory["budget_mb"] >= BIG_CEILING_MB, memory  # the same budget in both modes
    assert _oom_score_adj(api_pid) == 0  # the API is never the kernel's first choice
    assert enforcement["cpu_quota"] == (0.5 if service_mode.name == "render" else None)
    assert _oom_score_adj(until(server.zygote_pid, 30, "the zygote")) == 900
    assert all(_oom_score_adj(pid) == 1000 for pid in server.spare_pids())
    watchdog_before = memory["watchdog"]
    jobs = mix(SEED)
    started = time.monotonic()
    with HealthProbe(server.url) as health, ThreadPoolExecutor(len(jobs)) as pool:
        ids = list(pool.map(lambda job: server.submit(**job.request())["id"], jobs))
        done = [server.wait(task_id, timeout_s=600) for task_id in ids]
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for job, task in zip(jobs, done, strict=True):
        by_label[job.label][outcome(task)] += 1
    group = service_mode.group
    end = server.memory()
    cpu_s = end["watchdog"]["cpu_s"] - watchdog_before["cpu_s"]
    rounds = end["watchdog"]["rounds"] - watchdog_before["rounds"]
    print(
        f"{service_mode.name}: {dict(by_label)}; max usage {group.max_usage_mb:.0f} MB; "
        f"healthz slowest {health.slowest_s:.2f} s; base {memory['api_and_zygote_mb']} MB, "
        f"budget {memory['budget_mb']} MB at start, {end['budget_mb']} MB at the end; "
        f"watchdog {cpu_s:.2f} CPU s in {time.monotonic() - started:.0f} s, {rounds} rounds"
    )
    assert group.oom_kills == 0
    assert group.max_usage_mb < LIMIT_MB
    assert health.failures == 0 and health.slowest_s < 5
    assert server.proc.poll() is None and server.proc.pid == api_pid
    assert all(t["state"] in FINAL for t in done)
    assert all(t["reason"] for t in done if t["state"] != "succeeded")
    for job, task in zip(jobs, done, strict=True):
        assert not job.expect or outcome(task) in job.expect, (job, task)
        if service_mode.name == "render" and job.label.startswith("alloc300"):
            # Each reserves its ceiling: nothing else can crowd it out, so it fits and succeeds.
            assert outcome(task) == "succeeded/-", (job, task)
    assert server.client.get("/healthz").status_code == 200
