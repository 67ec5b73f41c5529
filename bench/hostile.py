"""Part of scenario 4, survival: the hostile minute (harness/hostile_mix.py: about fifty tasks submitted at
once) in Render mode beside lab mode, on several seeds, each run in a fresh 512 MB container.

Judged as tests/test_render_cgroup.py judges one seed: 0 container OOM kills, peak usage under 512 MB,
the same API process answering throughout, every task final with a reason, every task that fits the
container ending as expected.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.plan import Context, Plan
from bench.recorder import MemoryRecorder
from bench.service import container_figures, in_mode, log, reset_peak, server
from harness.cgroup import Mode
from harness.hostile_mix import mix, outcome

MODES = ("render", "lab")
GIVE_UP_S = 600


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    runs = [_minute(name, seed, ctx) for name in MODES for seed in plan.hostile_seeds]
    return {"runs": runs, "summary": summarize(runs)}


def _minute(name: str, seed: int, ctx: Context) -> dict[str, Any]:
    work_dir = ctx.work_dir / f"hostile-{name}-{seed}"
    with in_mode(name, work_dir) as home:
        if not isinstance(home, Mode):
            return {"mode": name, "seed": seed, "skipped": home}
        with server(work_dir, home) as srv:
            assert srv.proc is not None
            log(f"survival: hostile minute, {name} mode, seed {seed}")
            ooms_before = reset_peak(home.group)
            watchdog_before = srv.memory()["watchdog"]
            recorder = MemoryRecorder(home.group, srv.admin)
            recorder.start()
            jobs = mix(seed)
            started = time.monotonic()
            with ThreadPoolExecutor(len(jobs)) as pool:
                ids = list(pool.map(lambda job: srv.submit(**job.request())["id"], jobs))
            done = [srv.wait(task_id, GIVE_UP_S) for task_id in ids]
            took_s = time.monotonic() - started
            recorder.stop()
            watchdog = srv.memory()["watchdog"]
            figures = container_figures(home.group, ooms_before)
            api_alive = srv.proc.poll() is None and srv.client.get("/healthz").status_code == 200
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for job, task in zip(jobs, done, strict=True):
        by_label[job.label][outcome(task)] += 1
    return {
        "mode": name,
        "seed": seed,
        "took_s": round(took_s, 1),
        "tasks": len(done),
        "succeeded": sum(task["state"] == "succeeded" for task in done),
        "with_reason": sum(task["state"] == "succeeded" or bool(task["reason"]) for task in done),
        "as_expected": sum(
            not job.expect or outcome(task) in job.expect for job, task in zip(jobs, done, strict=True)
        ),
        "by_label": {label: dict(counts) for label, counts in sorted(by_label.items())},
        "api_alive": api_alive,
        # The watchdog thread's CPU during the minute (at 0.5 CPU in Render mode), and its rounds
        "watchdog_cpu_s": round(watchdog["cpu_s"] - watchdog_before["cpu_s"], 2),
        "watchdog_rounds": watchdog["rounds"] - watchdog_before["rounds"],
        "probe_failures": recorder.failures,
        "probe_slowest_s": round(recorder.slowest_s, 3),
        **figures,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    played = [r for r in runs if "skipped" not in r]
    return {
        "runs": len(played),
        "container_oom_kills": sum(r["container_oom_kills"] or 0 for r in played),
        "max_usage_mb": max((r["container_max_usage_mb"] or 0 for r in played), default=None),
        "aim_met": bool(played)
        and all(
            r["container_oom_kills"] == 0
            and (r["container_max_usage_mb"] or 0) < (r["limit_mb"] or 512)
            and r["api_alive"]
            and r["with_reason"] == r["as_expected"] == r["tasks"]
            for r in played
        ),
    }
