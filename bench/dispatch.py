"""Scenario 2, dispatch: a no-op task from submit to result, memvisor against the peers.

Every engine runs the same closed loop (``concurrency`` clients, each submitting its next task when
the last one ended) on the same no-op task; runs alternate between engines within each repeat so
that all of them see the same machine load. A run stops starting tasks after its time cap, so the
slow peers time fewer tasks (the ``n`` column). memvisor and the peers' children each run in a fresh
512 MB container where one can be made.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx

from bench import peers
from bench.plan import Context, Plan
from bench.service import Box, container, log, run_child, server
from bench.stats import aim, fmt, gathered, latency_summary, over_repeats, percentile, ratio

BASELINE = "memvisor-http"
ONE_REQUEST = "memvisor-post-wait"
ENGINES = (BASELINE, ONE_REQUEST, *peers.ENGINES)
FIGURES = (
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "tasks_per_s",
    "tasks",
    "server_queue_wait_p50_ms",
    "server_run_p50_ms",
)
NOOP = {"kind": "diag.sleep", "payload": {"seconds": 0}}
WAIT_S = 60
CHILD_TIMEOUT_S = 600
AIM_P50_MS = 15.0
AIM_TASKS_PER_S = 100.0


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    raw: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    with container() as server_box, container() as child_box:
        with server(ctx.work_dir / "dispatch-server", server_box) as srv:
            for repeat in range(plan.repeats):
                for engine in ENGINES:
                    log(f"dispatch {repeat + 1}/{plan.repeats}: {engine}")
                    if engine in (BASELINE, ONE_REQUEST):
                        raw[engine].append(
                            asyncio.run(_http(srv.url, plan, one_request=engine == ONE_REQUEST))
                        )
                    else:
                        raw[engine].append(_child(engine, plan, ctx, child_box, repeat))
        containers = f"server: {server_box.describe()}, children: {child_box.describe()}"
    for repeats in raw.values():  # latencies kept in the JSON in seconds to 10 us
        for runs in repeats:
            for r in runs.values():
                r["latencies_s"] = [round(x, 5) for x in r["latencies_s"]]
    return {"runs": raw, "summary": {"containers": containers, **summarize(raw)}}


def _child(engine: str, plan: Plan, ctx: Context, box: Box, repeat: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.peers", engine, "--tasks-json", json.dumps(plan.dispatch_tasks)]
    cmd += ["--warmup", str(plan.dispatch_warmup_tasks), "--max-s", str(plan.dispatch_run_s)]
    cmd += ["--data-dir", str(ctx.work_dir / f"dispatch-inprocess-{repeat}")]
    runs: dict[str, Any] = run_child(cmd, box, CHILD_TIMEOUT_S, ctx.repo)
    return runs


async def _http(url: str, plan: Plan, *, one_request: bool) -> dict[str, Any]:
    """POST /v1/tasks, then GET /v1/tasks/{id}?wait_s until it is final: what a client sees (or, with
    ``one_request``, POST /v1/tasks?wait_s alone). The server's own view of each task (queue wait,
    run time) is kept to show where the time goes."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    server_side: list[tuple[float, float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S + 10, limits=limits) as client:

        async def run_one() -> None:
            created = await client.post(
                "/v1/tasks", json=NOOP, params={"wait_s": WAIT_S if one_request else 0}
            )
            created.raise_for_status()
            task_id, done = created.json()["id"], created.json()
            if not one_request:
                done = (await client.get(f"/v1/tasks/{task_id}", params={"wait_s": WAIT_S})).json()
            if done["state"] != "succeeded":
                raise RuntimeError(f"task {task_id} ended {done['state']} ({done['reason']})")
            server_side.append((done.get("queue_wait_s") or 0.0, done.get("run_s") or 0.0))

        runs: dict[str, Any] = {}
        for concurrency, tasks in plan.dispatch_tasks.items():
            await gathered(run_one, plan.dispatch_warmup_tasks, concurrency, plan.dispatch_run_s)
            server_side.clear()
            run = await gathered(run_one, tasks, concurrency, plan.dispatch_run_s)
            run["server_queue_wait_s"] = [q for q, _ in server_side]
            run["server_run_s"] = [r for _, r in server_side]
            runs[str(concurrency)] = run
        return runs


def summarize(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One row per engine and number of clients: medians over the repeats, and ratios to memvisor
    over HTTP at the same number of clients, same run."""
    rows: list[dict[str, Any]] = []
    for engine, repeats in raw.items():
        for clients in repeats[0]:
            per_run = [_run_summary(r[clients]) for r in repeats]
            errors = [e for r in repeats for e in r[clients]["errors"]]
            rows.append({"engine": engine, "clients": clients, **over_repeats(per_run, FIGURES),
                         "errors": len(errors), "error_samples": errors[:3]})  # fmt: skip
    ours = {r["clients"]: r for r in rows if r["engine"] == BASELINE}
    for row in rows:
        base = ours[row["clients"]]
        row["p50_ratio"] = ratio(row["p50_ms"]["median"], base["p50_ms"]["median"])
        row["tasks_per_s_ratio"] = ratio(row["tasks_per_s"]["median"], base["tasks_per_s"]["median"])
    return {"rows": rows, "breakdown": list(ours.values()), "aims": _aims(rows)}


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = latency_summary(run["latencies_s"], run["wall_s"])
    if "server_run_s" in run:
        summary["server_queue_wait_p50_ms"] = percentile(run["server_queue_wait_s"], 50) * 1000
        summary["server_run_p50_ms"] = percentile(run["server_run_s"], 50) * 1000
    return summary


def _aims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    aims = []
    for engine, how in ((BASELINE, "POST + GET ?wait_s"), (ONE_REQUEST, "POST ?wait_s")):
        ours = {r["clients"]: r for r in rows if r["engine"] == engine}
        p50_ms = ours["1"]["p50_ms"]["median"] if "1" in ours else None
        best_tps = max((r["tasks_per_s"]["median"] or 0.0) for r in ours.values())
        p50_met = None if p50_ms is None else p50_ms <= AIM_P50_MS
        aims.append(
            aim(
                "2 dispatch",
                f"HTTP ({how}) p50 at 1 client: {fmt(p50_ms)} ms",
                f"<= {AIM_P50_MS:g} ms",
                p50_met,
            )
        )
        tps = f"HTTP ({how}) best throughput: {fmt(best_tps)} tasks/s"
        aims.append(aim("2 dispatch", tps, f">= {AIM_TASKS_PER_S:g} tasks/s", best_tps >= AIM_TASKS_PER_S))
    return aims
