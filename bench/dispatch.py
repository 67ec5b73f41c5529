"""Scenario 2, dispatch: a no-op task from submit to result, memvisor against the peers.

Every engine runs the same closed loop (``concurrency`` clients, each submitting its next task when
the last one ended) on the same no-op task; runs alternate between engines within each repeat so
that all of them see the same machine load. memvisor and the peers' children each run in a fresh
512 MB container where one can be made.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx

from bench.loop import gathered
from bench.plan import Context, Plan
from bench.service import container, log, run_child, server
from bench.stats import latency_summary, over_repeats, percentile, ratio
from harness.cgroup import LimitedCgroup

ENGINES = (
    "memvisor-http",
    "memvisor-post-wait",
    "memvisor-inprocess",
    "ppe-forkserver",
    "ppe-spawn",
    "mp-forkserver",
    "fork",
)
BASELINE = "memvisor-http"
ONE_REQUEST = "memvisor-post-wait"
FIGURES = ("p50_ms", "p95_ms", "p99_ms", "tasks_per_s", "tasks")
SERVER_FIGURES = ("server_queue_wait_p50_ms", "server_run_p50_ms")
NOOP = {"kind": "diag.sleep", "payload": {"seconds": 0}}
WAIT_S = 60
CHILD_TIMEOUT_S = 600
AIM_P50_MS = 15.0
AIM_TASKS_PER_S = 100.0


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    raw: dict[str, list[dict[str, Any]]] = {engine: [] for engine in ENGINES}
    with container() as server_group, container() as child_group:
        with server(ctx.work_dir / "dispatch-server", server_group) as srv:
            for repeat in range(plan.repeats):
                for engine in ENGINES:
                    log(f"dispatch {repeat + 1}/{plan.repeats}: {engine}")
                    raw[engine].append(
                        _measure(engine, plan, ctx, url=srv.url, group=child_group, repeat=repeat)
                    )
        containers = {"server": _describe(server_group), "children": _describe(child_group)}
    return {"runs": _rounded(raw), "containers": containers, "summary": summarize(raw)}


def _measure(
    engine: str, plan: Plan, ctx: Context, *, url: str, group: LimitedCgroup | str, repeat: int
) -> dict[str, Any]:
    if engine in (BASELINE, ONE_REQUEST):
        return asyncio.run(_http(url, plan, one_request=engine == ONE_REQUEST))
    tasks = json.dumps(plan.dispatch_tasks)
    common = ["--tasks-json", tasks, "--warmup", str(plan.dispatch_warmup_tasks)]
    common += ["--max-s", str(plan.dispatch_run_s)]
    if engine == "memvisor-inprocess":
        data_dir = ctx.work_dir / f"dispatch-inprocess-{repeat}"
        cmd = [sys.executable, "-m", "bench.inprocess", "--data-dir", str(data_dir), *common]
    else:
        cmd = [sys.executable, "-m", "bench.peers", engine, *common]
    runs: dict[str, Any] = json.loads(
        run_child(cmd, group, CHILD_TIMEOUT_S, ctx.repo).strip().splitlines()[-1]
    )
    return runs


async def _http(url: str, plan: Plan, *, one_request: bool) -> dict[str, Any]:
    """POST /v1/tasks, then GET /v1/tasks/{id}?wait_s until it is final: what a client sees (or, with
    ``one_request``, POST /v1/tasks?wait_s alone). The server's own view of each task (queue wait,
    run time) is kept to show where the time goes."""
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    server_side: list[tuple[float, float]] = []
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S + 10, limits=limits) as client:

        async def run_one() -> None:
            wait = {"wait_s": WAIT_S if one_request else 0}
            created = await client.post("/v1/tasks", json=NOOP, params=wait)
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


def _describe(group: LimitedCgroup | str) -> str:
    return f"512 MB cgroup {group.path.name}" if isinstance(group, LimitedCgroup) else group


def _rounded(raw: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Latencies kept in the JSON, in seconds to 10 us."""
    out: dict[str, list[dict[str, Any]]] = {}
    for engine, repeats in raw.items():
        out[engine] = [
            {c: {**r, "latencies_s": [round(x, 5) for x in r["latencies_s"]]} for c, r in runs.items()}
            for runs in repeats
        ]
    return out


def summarize(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for engine, repeats in raw.items():
        table[engine] = {}
        for concurrency in repeats[0]:
            per_run = [_run_summary(r[concurrency]) for r in repeats]
            cell: dict[str, Any] = over_repeats(per_run, (*FIGURES, *SERVER_FIGURES))
            cell["errors"] = sum(len(r[concurrency]["errors"]) for r in repeats)
            cell["error_samples"] = [e for r in repeats for e in r[concurrency]["errors"]][:3]
            table[engine][concurrency] = cell
    _add_ratios(table)
    return {"table": table, **_aims(table)}


def _run_summary(run: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = latency_summary(run["latencies_s"], run["wall_s"])
    if "server_run_s" in run:
        summary["server_queue_wait_p50_ms"] = percentile(run["server_queue_wait_s"], 50) * 1000
        summary["server_run_p50_ms"] = percentile(run["server_run_s"], 50) * 1000
    return summary


def _add_ratios(table: dict[str, dict[str, Any]]) -> None:
    """Each engine's median p50 and throughput as a multiple of memvisor over HTTP's, same run."""
    for cells in table.values():
        for concurrency, cell in cells.items():
            ours = table[BASELINE][concurrency]
            cell["p50_vs_memvisor_http"] = ratio(cell["p50_ms"]["median"], ours["p50_ms"]["median"])
            cell["tps_vs_memvisor_http"] = ratio(cell["tasks_per_s"]["median"], ours["tasks_per_s"]["median"])


def _aims(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    aims: dict[str, Any] = {"aim_p50_ms": AIM_P50_MS, "aim_tasks_per_s": AIM_TASKS_PER_S}
    for engine, prefix in ((BASELINE, "http"), (ONE_REQUEST, "post_wait")):
        ours = table[engine]
        p50_ms = ours["1"]["p50_ms"]["median"] if "1" in ours else None
        best_tps = max((cell["tasks_per_s"]["median"] or 0.0) for cell in ours.values())
        aims[f"{prefix}_p50_ms_c1"] = p50_ms
        aims[f"{prefix}_p50_met"] = None if p50_ms is None else p50_ms <= AIM_P50_MS
        aims[f"{prefix}_best_tasks_per_s"] = best_tps
        aims[f"{prefix}_tasks_per_s_met"] = best_tps >= AIM_TASKS_PER_S
    return aims
