"""Scenario 1, footprint: the idle API process and zygote against the seed's one big process.

The service idles in a fresh 512 MB container; RSS and PSS of the API process, the zygote and the
spare (a worker forked ahead of need, ``SPARE_WORKERS``, default 1) come from smaps_rollup, medians of
a few readings, idle and again after a batch of no-op tasks. RSS counts the pages a spare shares with
the zygote twice, PSS splits them. The seed's process (bench/seed.py) imports its whole stack in one
interpreter, each import timed and followed by a reading; repeats alternate between the two.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.plan import Context, Plan
from bench.probes import rollup_mb
from bench.service import Box, container, log, run_child, run_task, server, wait_idle
from bench.stats import aim, fmt, over_repeats, ratio, times
from harness.server import Server
from supervisor.memory import Cgroup
from workers.units import MB

SETTLE_S = 2.0
SAMPLES = 5
SAMPLE_EVERY_S = 0.2
AIM_MB = 80.0
SEED_TIMEOUT_S = 600
PARTS = ("api", "zygote", "spare", "sum")
NAMES = ("API process, idle", "zygote, idle", "spare worker(s), idle", "**API + zygote + spare, idle**")
FIGURES = tuple(f"{part}_{kind}_mb" for part in PARTS for kind in ("rss", "pss"))
CONTAINER_FIGURES = ("container_usage_mb", "container_working_set_mb")


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    service_runs: list[dict[str, Any]] = []
    seed_runs: list[dict[str, Any]] = []
    for repeat in range(plan.repeats):  # alternated, so that both see the same machine load
        log(f"footprint {repeat + 1}/{plan.repeats}: service, then the seed process")
        service_runs.append(_service_once(plan, ctx, repeat))
        cmd = [sys.executable, "-m", "bench.seed", "--site", ":".join(ctx.extra_site)]
        seed_runs.append(run_child(cmd, None, SEED_TIMEOUT_S, ctx.repo))
    return {"service": service_runs, "seed": seed_runs, "summary": summarize(service_runs, seed_runs)}


def _service_once(plan: Plan, ctx: Context, repeat: int) -> dict[str, Any]:
    with container() as box, server(ctx.work_dir / f"footprint-{repeat}", box) as srv:
        time.sleep(SETTLE_S)
        idle = _sample(srv, box)
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda _: run_task(srv, "diag.sleep", {"seconds": 0}, 60),
                    range(plan.footprint_load_tasks),
                )
            )
        wait_idle(srv)
        time.sleep(SETTLE_S)
        loaded = _sample(srv, box)
    return {"idle": idle, "after_load": loaded, "load_tasks": plan.footprint_load_tasks}


def _sample(srv: Server, box: Box) -> dict[str, float]:
    """Median of a few readings of both processes (and of the container, if there is one)."""
    readings = []
    for _ in range(SAMPLES):
        if reading := _reading(srv, box):
            readings.append(reading)
        time.sleep(SAMPLE_EVERY_S)
    if not readings:
        raise RuntimeError("the API process or its zygote could not be read (did the server die?)")
    return {key: round(statistics.median(r[key] for r in readings), 1) for key in readings[0]}


def _reading(srv: Server, box: Box) -> dict[str, float] | None:
    """RSS and PSS of the API process, the zygote and the idle spare workers; the zygote is looked
    up each time (it may have been restarted). RSS counts the pages a spare shares with the zygote
    twice; PSS splits them."""
    assert srv.proc is not None
    api, zygote = rollup_mb(srv.proc.pid), rollup_mb(srv.zygote_pid() or 0)
    if not api or not zygote:
        return None
    spares = [rollup_mb(pid) for pid in srv.spare_pids()]
    reading: dict[str, float] = {}
    for kind in ("rss", "pss"):
        reading[f"api_{kind}_mb"] = api[f"{kind}_mb"]
        reading[f"zygote_{kind}_mb"] = zygote[f"{kind}_mb"]
        reading[f"spare_{kind}_mb"] = sum(s.get(f"{kind}_mb", 0.0) for s in spares)
        reading[f"sum_{kind}_mb"] = sum(reading[f"{part}_{kind}_mb"] for part in PARTS[:3])
    if box.group is not None:
        reading["container_usage_mb"] = int(box.group.read("memory.usage_in_bytes")) / MB
        reading["container_working_set_mb"] = Cgroup(1, box.group.path).working_set_bytes() / MB
    return reading


def summarize(service_runs: list[dict[str, Any]], seed_runs: list[dict[str, Any]]) -> dict[str, Any]:
    idle = over_repeats([r["idle"] for r in service_runs], (*FIGURES, *CONTAINER_FIGURES))
    loaded = over_repeats([r["after_load"] for r in service_runs], FIGURES)
    seed = over_repeats(seed_runs, ("rss_mb", "pss_mb", "hwm_mb"))
    ratio_rss = ratio(seed["rss_mb"]["median"], idle["sum_rss_mb"]["median"])
    ratio_pss = ratio(seed["pss_mb"]["median"], idle["sum_pss_mb"]["median"])
    rows: list[dict[str, Any]] = [
        {"process": name, "rss_mb": idle[f"{part}_rss_mb"], "pss_mb": idle[f"{part}_pss_mb"]}
        for part, name in zip(PARTS, NAMES, strict=True)
    ]
    rows[-1]["ratio"] = "x1.00"
    after = f"the same, idle after {service_runs[0]['load_tasks']} tasks"
    rows.append({"process": after, "rss_mb": loaded["sum_rss_mb"], "pss_mb": loaded["sum_pss_mb"]})
    rows.append(
        {"process": "container working set, idle (cgroup)", "rss_mb": idle["container_working_set_mb"]}
    )
    ratios = f"{times(ratio_rss)} RSS, {times(ratio_pss)} PSS"
    rows.append({"process": "**seed: one process importing the stack**", **seed, "ratio": ratios})
    missing = {m: e for run in seed_runs for m, e in run["missing"].items()}
    return {
        "rows": rows,
        "idle": idle,
        "seed": seed,
        "seed_missing": "; ".join(f"`{m}` ({e})" for m, e in missing.items()) or "none",
        "seed_steps": _increments(seed_runs[0]["steps"]),
        "seed_python": seed_runs[0]["python"],
        "aims": _aims(idle, seed, ratio_rss),
    }


def _aims(idle: dict[str, Any], seed: dict[str, Any], ratio_rss: float | None) -> list[dict[str, Any]]:
    rows = []
    for kind in ("RSS", "PSS"):
        figure = idle[f"sum_{kind.lower()}_mb"]
        met = None if figure["median"] is None else figure["median"] <= AIM_MB
        rows.append(
            aim("1 footprint", f"API + zygote + spare idle {kind} {fmt(figure)} MB", f"<= {AIM_MB:g} MB", met)
        )
    seed_row = aim("1 footprint", f"seed process {fmt(seed['rss_mb'])} MB RSS", "(baseline)", None)
    return [*rows, {**seed_row, "verdict": f"{times(ratio_rss)} ours"}]


def _increments(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each import added to the process's RSS (the first run's, in import order)."""
    rows, previous = [], 0.0
    for step in steps:
        rows.append(
            {**step, "module": f"`{step['module']}`", "added_rss_mb": f"+{step['rss_mb'] - previous:.1f}"}
        )
        previous = step["rss_mb"]
    return rows
