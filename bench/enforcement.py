"""Scenario 3, enforcement: a worker allocating past its ceiling, at 100 MB/s, 1 GB/s and as fast as
it can. How far past the ceiling did it get, and how long from crossing the ceiling to its death?

Run in four services: in lab mode (root) with the kernel backstop (per-worker memory cgroups, the
default) and with the watchdog alone (WORKER_CGROUPS=false); in Render mode (uid 10001, no writable
cgroup, 0.5 CPU: harness/cgroup.py) with RLIMIT_DATA in each worker (the default) and without it
(WORKER_DATA_LIMIT=false). Each service runs in a fresh 512 MB container where one can be made, whose
own OOM-kill counter is read after every trial.

``peak`` is the task's peak_rss_mb (the watchdog's samples and the kernel's ru_maxrss). ``sampled`` is
the bench's own reading of /proc/<pid>/statm every ~0.25 ms (a short sleep, not a spin, so as not to
starve the watchdog on 2 cores), the worker found among the zygote's children and matched to the
task's ``worker_pid`` (a burst can cross the ceiling before an HTTP poll of /admin/workers answers).
``charged`` is the worker cgroup's memory.max_usage_in_bytes, what the kernel backstop limits (RSS also
counts pages shared with the zygote, which are charged to the zygote); ``killed by the kernel``, how
many trials the worker cgroup's own OOM-kill counter shows (the backstop acted before the watchdog);
``crossed``, how many trials the bench saw at or above the ceiling (the time to death is measured on
those). In Render mode RLIMIT_DATA ends a worker ``killed/memory_ceiling`` on a MemoryError.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.plan import Context, Plan
from bench.probes import Track, WorkerSampler
from bench.service import Box, container, log, run_task, server, wait_idle
from bench.stats import aim, fmt, over_repeats
from harness.server import Server

# name -> (container mode, environment of the service)
MODES: dict[str, tuple[str, dict[str, str]]] = {
    "kernel backstop": ("lab", {}),
    "watchdog only": ("lab", {"WORKER_CGROUPS": "false"}),
    "render, RLIMIT_DATA": ("render", {}),
    "render, watchdog only": ("render", {"WORKER_DATA_LIMIT": "false"}),
}
AIM_WATCHDOG_PCT = 5.0
FIGURES = (
    "overshoot_mb",
    "overshoot_pct",
    "sampled_overshoot_mb",
    "charged_overshoot_mb",
    "cross_to_death_ms",
    "container_max_usage_mb",
)
TASK_TIMEOUT_S = 120


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    trials: dict[str, list[dict[str, Any]]] = {}
    for n, (mode, (kind, env)) in enumerate(MODES.items()):
        work_dir = ctx.work_dir / f"enforce-{n}"
        with container(kind, work_dir) as box, server(work_dir, box, env) as srv:
            trials[mode] = _trials(srv, box, plan, mode)
    return {"trials": trials, "summary": summarize(trials, plan)}


def _trials(srv: Server, box: Box, plan: Plan, mode: str) -> list[dict[str, Any]]:
    trials = []
    for repeat in range(plan.enforcement_repeats):
        for rate in plan.enforcement_rates_mb_s:
            log(f"enforcement {mode}: {rate:g} MB/s, {repeat + 1}/{plan.enforcement_repeats}")
            trials.append(_trial(srv, box, plan, rate))
    return trials


def _trial(srv: Server, box: Box, plan: Plan, rate_mb_s: float) -> dict[str, Any]:
    wait_idle(srv)
    box.reset_peak()
    sampler = WorkerSampler(srv.zygote_pid() or 0, plan.enforcement_ceiling_mb)
    sampler.start()
    payload = {"mb": plan.enforcement_alloc_mb, "rate_mb_s": rate_mb_s, "hold_s": 0}
    task = run_task(srv, "diag.alloc", payload, TASK_TIMEOUT_S, ceiling_mb=plan.enforcement_ceiling_mb)
    time.sleep(0.05)  # the pid has ended; let the sampler see it go
    sampler.stop()
    overshoot_mb = _minus(task["peak_rss_mb"], task["ceiling_mb"])
    return {
        "rate_mb_s": rate_mb_s,
        "ceiling_mb": task["ceiling_mb"],
        "outcome": _outcome(task),
        "peak_rss_mb": task["peak_rss_mb"],
        "overshoot_mb": overshoot_mb,
        "overshoot_pct": None if overshoot_mb is None else round(100 * overshoot_mb / task["ceiling_mb"], 2),
        **_from_track(sampler.tracks.get(task.get("worker_pid") or -1), task["ceiling_mb"]),
        **box.figures(),
    }


def _outcome(task: dict[str, Any]) -> str:
    """State/reason, and what stopped the worker: its own MemoryError (RLIMIT_DATA) or a SIGKILL."""
    error_type = (task.get("error") or {}).get("type")
    by = " (MemoryError)" if error_type == "MemoryError" else " (SIGKILL)" if task.get("signal") == 9 else ""
    return f"{task['state']}/{task['reason']}{by}"


def _from_track(track: Track | None, ceiling_mb: float) -> dict[str, Any]:
    if track is None:
        return {"sampled": False}
    cross_to_death_ms = None
    if track.cross_t is not None and track.gone_t is not None:
        cross_to_death_ms = (track.gone_t - track.cross_t) * 1000
    return {
        "sampled": True,
        "samples": track.samples,
        "sampled_max_rss_mb": round(track.max_rss_mb, 1),
        "sampled_overshoot_mb": round(track.max_rss_mb - ceiling_mb, 1),
        "crossed_ceiling": track.cross_t is not None,
        "cross_to_death_ms": cross_to_death_ms,
        "charged_max_mb": track.max_charged_mb,
        "charged_overshoot_mb": _minus(track.max_charged_mb, ceiling_mb),
        "killed_by_kernel": track.kernel_oom_kills > 0 if track.max_charged_mb is not None else None,
        "worker_cgroup": track.cgroup.name if track.cgroup else None,
    }


def _minus(value: float | None, minus: float) -> float | None:
    return None if value is None else round(value - minus, 1)


def summarize(trials: dict[str, list[dict[str, Any]]], plan: Plan) -> dict[str, Any]:
    rows = []
    for mode, runs in trials.items():
        for rate in plan.enforcement_rates_mb_s:
            same = [t for t in runs if t["rate_mb_s"] == rate]
            kernel = [t["killed_by_kernel"] for t in same if t.get("killed_by_kernel") is not None]
            row: dict[str, Any] = {
                "mode": mode,
                "rate": "as fast as possible" if rate == 0 else f"{rate:g} MB/s",
                **over_repeats(same, FIGURES),
                "outcomes": dict(Counter(t["outcome"] for t in same)),
                "killed_by_kernel": f"{sum(kernel)}/{len(same)}" if kernel else "-",  # "-": no worker cgroups
                "crossed": f"{sum(bool(t.get('crossed_ceiling')) for t in same)}/{len(same)}",
                "container_oom_kills": sum(t.get("container_oom_kills") or 0 for t in same),
            }
            rows.append(row)
    return {"rows": rows, "aims": _aims(trials)}


def _aims(trials: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Backstop: nothing charged past the ceiling, no container OOM. Watchdog: RSS overshoot < 5 %.
    Render: no container OOM kill in any trial, and how far past the ceiling RLIMIT_DATA let a worker get."""
    backstops, watchdog = trials.get("kernel backstop", []), trials.get("watchdog only", [])
    render = [t for mode, runs in trials.items() if mode.startswith("render") for t in runs]
    charged = [t["charged_overshoot_mb"] for t in backstops if t.get("charged_overshoot_mb") is not None]
    worst_pct = max((t["overshoot_pct"] for t in watchdog if t["overshoot_pct"] is not None), default=None)
    worst_rss = max((t["overshoot_mb"] or 0 for t in backstops), default=None)
    render_ooms = sum(t.get("container_oom_kills") or 0 for t in render)
    render_worst = max((t["overshoot_mb"] or 0 for t in trials.get("render, RLIMIT_DATA", [])), default=None)
    backstop_met = (
        bool(charged) and max(charged) <= 0 and not any(t.get("container_oom_kills") for t in backstops)
    )
    render_met = bool(render) and render_ooms == 0
    worst_charged = fmt(max(charged, default=None))
    backstop = (
        f"kernel backstop: worst charged - ceiling {worst_charged} MB (RSS - ceiling {fmt(worst_rss)} MB)"
    )
    alone = f"watchdog alone: worst overshoot {fmt(worst_pct, 2)} % of the ceiling"
    alone_met = worst_pct is not None and worst_pct < AIM_WATCHDOG_PCT
    render_figure = f"Render mode: {render_ooms} container OOM kills; with RLIMIT_DATA worst peak - ceiling "
    return [
        aim("3 enforcement", backstop, "nothing charged past the ceiling", backstop_met),
        aim("3 enforcement", alone, f"< {AIM_WATCHDOG_PCT:g} % of the ceiling", alone_met),
        aim("3 enforcement", f"{render_figure}{fmt(render_worst)} MB", "0 container OOM kills", render_met),
    ]
