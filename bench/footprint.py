"""Scenario 1, footprint: the idle API process and zygote against the seed's one big process."""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.plan import Context, Plan
from bench.procmem import rollup_mb
from bench.service import container, log, run_child, server, wait_idle
from bench.stats import over_repeats, ratio
from harness.cgroup import LimitedCgroup
from harness.server import Server
from supervisor.memory import Cgroup
from workers.units import MB

SETTLE_S = 2.0
SAMPLES = 5
SAMPLE_EVERY_S = 0.2
AIM_MB = 80.0
SEED_TIMEOUT_S = 600
FIGURES = (
    "api_rss_mb",
    "api_pss_mb",
    "zygote_rss_mb",
    "zygote_pss_mb",
    "spare_rss_mb",
    "spare_pss_mb",
    "sum_rss_mb",
    "sum_pss_mb",
)


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    service_runs: list[dict[str, Any]] = []
    seed_runs: list[dict[str, Any]] = []
    for repeat in range(plan.repeats):  # alternated, so that both see the same machine load
        log(f"footprint {repeat + 1}/{plan.repeats}: service")
        service_runs.append(_service_once(plan, ctx, repeat))
        log(f"footprint {repeat + 1}/{plan.repeats}: seed process")
        seed_runs.append(_seed_once(ctx))
    return {"service": service_runs, "seed": seed_runs, "summary": summarize(service_runs, seed_runs)}


def _service_once(plan: Plan, ctx: Context, repeat: int) -> dict[str, Any]:
    with container() as group, server(ctx.work_dir / f"footprint-{repeat}", group) as srv:
        time.sleep(SETTLE_S)
        idle = _sample(srv, group)
        _noop_load(srv, plan.footprint_load_tasks)
        wait_idle(srv)
        time.sleep(SETTLE_S)
        loaded = _sample(srv, group)
    return {"idle": idle, "after_load": loaded, "load_tasks": plan.footprint_load_tasks}


def _sample(srv: Server, group: LimitedCgroup | str) -> dict[str, float]:
    """Median of a few readings of both processes (and of the container, if there is one)."""
    readings = []
    for _ in range(SAMPLES):
        reading = _reading(srv, group)
        if reading:
            readings.append(reading)
        time.sleep(SAMPLE_EVERY_S)
    if not readings:
        raise RuntimeError("the API process or its zygote could not be read (did the server die?)")
    return {key: round(statistics.median(r[key] for r in readings), 1) for key in readings[0]}


def _reading(srv: Server, group: LimitedCgroup | str) -> dict[str, float] | None:
    """RSS and PSS of the API process, the zygote and the idle spare workers; the zygote is looked
    up each time (it may have been restarted). RSS counts the pages a spare shares with the zygote
    twice; PSS splits them."""
    assert srv.proc is not None
    api, zygote = rollup_mb(srv.proc.pid), rollup_mb(srv.zygote_pid() or 0)
    if not api or not zygote:
        return None
    spares = [rollup_mb(pid) for pid in srv.spare_pids()]
    reading = {
        "api_rss_mb": api["rss_mb"],
        "api_pss_mb": api["pss_mb"],
        "zygote_rss_mb": zygote["rss_mb"],
        "zygote_pss_mb": zygote["pss_mb"],
        "spare_rss_mb": sum(s.get("rss_mb", 0.0) for s in spares),
        "spare_pss_mb": sum(s.get("pss_mb", 0.0) for s in spares),
    }
    reading["sum_rss_mb"] = reading["api_rss_mb"] + reading["zygote_rss_mb"] + reading["spare_rss_mb"]
    reading["sum_pss_mb"] = reading["api_pss_mb"] + reading["zygote_pss_mb"] + reading["spare_pss_mb"]
    if isinstance(group, LimitedCgroup):
        cgroup = Cgroup(1, group.path)
        reading["container_usage_mb"] = int(group.read("memory.usage_in_bytes")) / MB
        reading["container_working_set_mb"] = cgroup.working_set_bytes() / MB
    return reading


def _noop_load(srv: Server, tasks: int) -> None:
    def one(_: int) -> None:
        srv.wait(srv.submit("diag.sleep", {"seconds": 0})["id"], timeout_s=60)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(tasks)))


def _seed_once(ctx: Context) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.seed", "--site", ":".join(ctx.extra_site)]
    out = run_child(cmd, "no container: a footprint reading", SEED_TIMEOUT_S, ctx.repo)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def summarize(service_runs: list[dict[str, Any]], seed_runs: list[dict[str, Any]]) -> dict[str, Any]:
    container_keys = ("container_usage_mb", "container_working_set_mb")
    idle = over_repeats([r["idle"] for r in service_runs], (*FIGURES, *container_keys))
    loaded = over_repeats([r["after_load"] for r in service_runs], (*FIGURES, *container_keys))
    seed = over_repeats(seed_runs, ("rss_mb", "pss_mb", "hwm_mb"))
    missing = sorted({m for run in seed_runs for m in run["missing"]})
    return {
        "idle": idle,
        "after_load": loaded,
        "seed": seed,
        "seed_missing": {m: seed_runs[0]["missing"].get(m, "") for m in missing},
        "seed_steps": _increments(seed_runs[0]["steps"]) if seed_runs else [],
        "seed_python": seed_runs[0]["python"] if seed_runs else None,
        "ratio_seed_to_service_rss": ratio(seed["rss_mb"]["median"], idle["sum_rss_mb"]["median"]),
        "ratio_seed_to_service_pss": ratio(seed["pss_mb"]["median"], idle["sum_pss_mb"]["median"]),
        "aim_mb": AIM_MB,
        "aim_met_rss": _at_most(idle["sum_rss_mb"]["median"], AIM_MB),
        "aim_met_pss": _at_most(idle["sum_pss_mb"]["median"], AIM_MB),
        "aim_met_rss_after_load": _at_most(loaded["sum_rss_mb"]["median"], AIM_MB),
    }


def _increments(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each import added to the process's RSS (the first run's, in import order)."""
    rows, previous = [], 0.0
    for step in steps:
        rows.append({**step, "added_rss_mb": round(step["rss_mb"] - previous, 1)})
        previous = step["rss_mb"]
    return rows


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit
