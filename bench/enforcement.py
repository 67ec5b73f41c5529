"""Scenario 3, enforcement: a worker allocating past its ceiling, at 100 MB/s, 1 GB/s and as fast as
it can. How far past the ceiling did it get, and how long from crossing the ceiling to its death?

Run in four services: in lab mode (root) with the kernel backstop (per-worker memory cgroups, the
default) and with the watchdog alone (WORKER_CGROUPS=false); in Render mode (uid 10001, no writable
cgroup, 0.5 CPU: harness/cgroup.py) with RLIMIT_DATA in each worker (the default) and without it
(WORKER_DATA_LIMIT=false). Each service runs in a fresh 512 MB container where one can be made, whose
own OOM-kill counter is read after every trial.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.plan import Context, Plan
from bench.sampler import Track, WorkerSampler
from bench.service import in_mode, log, server, wait_idle
from bench.stats import over_repeats
from harness.cgroup import LimitedCgroup, Mode
from harness.server import Server
from workers.units import MB

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
    "container_peak_mb",
)
TASK_TIMEOUT_S = 120


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    trials: dict[str, list[dict[str, Any]]] = {}
    containers: dict[str, str] = {}
    for mode, (kind, env) in MODES.items():
        work_dir = ctx.work_dir / f"enforce-{len(trials)}"
        with in_mode(kind, work_dir) as home, server(work_dir, home, env) as srv:
            group = home.group if isinstance(home, Mode) else home
            containers[mode] = f"512 MB cgroup, {kind} mode" if isinstance(home, Mode) else home
            trials[mode] = _trials(srv, group, plan, mode)
    return {"trials": trials, "containers": containers, "summary": summarize(trials, plan)}


def _trials(srv: Server, group: LimitedCgroup | str, plan: Plan, mode: str) -> list[dict[str, Any]]:
    backstop = bool(srv.memory()["worker_cgroups"])
    trials = []
    for repeat in range(plan.enforcement_repeats):
        for rate in plan.enforcement_rates_mb_s:
            log(f"enforcement {mode}: {rate:g} MB/s, {repeat + 1}/{plan.enforcement_repeats}")
            trials.append({**_trial(srv, group, plan, rate), "backstop_active": backstop})
    return trials


def _trial(srv: Server, group: LimitedCgroup | str, plan: Plan, rate_mb_s: float) -> dict[str, Any]:
    wait_idle(srv)
    ooms_before = group.oom_kills if isinstance(group, LimitedCgroup) else None
    if isinstance(group, LimitedCgroup):
        (group.path / "memory.max_usage_in_bytes").write_text("0")  # v1: resets the peak
    ceiling_mb = plan.enforcement_ceiling_mb
    sampler = WorkerSampler(srv.zygote_pid() or 0, ceiling_mb)
    sampler.start()
    payload = {"mb": plan.enforcement_alloc_mb, "rate_mb_s": rate_mb_s, "hold_s": 0}
    task = srv.wait(srv.submit("diag.alloc", payload, ceiling_mb=ceiling_mb)["id"], TASK_TIMEOUT_S)
    time.sleep(0.05)  # the pid has ended; let the sampler see it go
    sampler.stop()
    track = sampler.tracks.get(task.get("worker_pid") or -1)
    return {
        "rate_mb_s": rate_mb_s,
        "ceiling_mb": task["ceiling_mb"],
        "state": task["state"],
        "reason": task["reason"],
        "error_type": (task.get("error") or {}).get("type"),
        "signal": task.get("signal"),
        "peak_rss_mb": task["peak_rss_mb"],
        "overshoot_mb": _minus(task["peak_rss_mb"], task["ceiling_mb"]),
        "overshoot_pct": _pct(_minus(task["peak_rss_mb"], task["ceiling_mb"]), task["ceiling_mb"]),
        **_from_track(track, task["ceiling_mb"]),
        **_container(group, ooms_before),
    }


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


def _container(group: LimitedCgroup | str, ooms_before: int | None) -> dict[str, Any]:
    if not isinstance(group, LimitedCgroup) or ooms_before is None:
        return {"container_oom_kills": None, "container_peak_mb": None}
    return {
        "container_oom_kills": group.oom_kills - ooms_before,
        "container_peak_mb": round(int(group.read("memory.max_usage_in_bytes")) / MB, 1),
    }


def _minus(value: float | None, minus: float) -> float | None:
    return None if value is None else round(value - minus, 1)


def _pct(part: float | None, whole: float) -> float | None:
    return None if part is None or not whole else round(100 * part / whole, 2)


def summarize(trials: dict[str, list[dict[str, Any]]], plan: Plan) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for mode, runs in trials.items():
        table[mode] = {}
        for rate in plan.enforcement_rates_mb_s:
            same = [t for t in runs if t["rate_mb_s"] == rate]
            cell: dict[str, Any] = over_repeats(same, FIGURES)
            cell["outcomes"] = dict(Counter(_outcome(t) for t in same))
            cell["crossed"] = sum(bool(t.get("crossed_ceiling")) for t in same)
            kernel = [t["killed_by_kernel"] for t in same if t.get("killed_by_kernel") is not None]
            cell["killed_by_kernel"] = sum(kernel) if kernel else None  # None: no worker cgroups
            cell["container_oom_kills"] = sum(t.get("container_oom_kills") or 0 for t in same)
            cell["trials"] = len(same)
            table[mode][_rate_name(rate)] = cell
    return {"table": table, **_aims(trials)}


def _outcome(trial: dict[str, Any]) -> str:
    """State/reason, and what stopped the worker: its own MemoryError (RLIMIT_DATA) or a SIGKILL."""
    by = {"MemoryError": " (MemoryError)"}.get(trial.get("error_type") or "", "")
    by = by or (" (SIGKILL)" if trial.get("signal") == 9 else "")
    return f"{trial['state']}/{trial['reason']}{by}"


def _rate_name(rate_mb_s: float) -> str:
    return "as fast as possible" if rate_mb_s == 0 else f"{rate_mb_s:g} MB/s"


def _aims(trials: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Backstop: nothing charged past the ceiling, no container OOM. Watchdog: RSS overshoot < 5 %.
    Render: no container OOM kill in any trial, and how far past the ceiling RLIMIT_DATA let a worker get."""
    backstop = trials.get("kernel backstop", [])
    watchdog = trials.get("watchdog only", [])
    render = [t for mode, runs in trials.items() if mode.startswith("render") for t in runs]
    limited = trials.get("render, RLIMIT_DATA", [])
    charged = [t["charged_overshoot_mb"] for t in backstop if t.get("charged_overshoot_mb") is not None]
    worst_pct = max((t["overshoot_pct"] for t in watchdog if t["overshoot_pct"] is not None), default=None)
    return {
        "backstop_worst_charged_overshoot_mb": max(charged, default=None),
        "backstop_worst_rss_overshoot_mb": max((t["overshoot_mb"] or 0 for t in backstop), default=None),
        "aim_backstop_met": bool(charged) and max(charged) <= 0 and _no_container_oom(backstop),
        "watchdog_worst_overshoot_pct": worst_pct,
        "aim_watchdog_pct": AIM_WATCHDOG_PCT,
        "aim_watchdog_met": worst_pct is not None and worst_pct < AIM_WATCHDOG_PCT,
        "render_worst_overshoot_mb": max((t["overshoot_mb"] or 0 for t in limited), default=None),
        "render_container_oom_kills": sum(t.get("container_oom_kills") or 0 for t in render),
        "aim_render_met": bool(render) and _no_container_oom(render),
    }


def _no_container_oom(runs: list[dict[str, Any]]) -> bool:
    return all(not t.get("container_oom_kills") for t in runs)
