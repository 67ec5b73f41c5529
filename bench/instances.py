"""Scenario 7, instances: one queue in PostgreSQL shared by 1, 2 and 3 instances (``ROLE=all``, a fresh
database each), against one instance on SQLite (the baseline), one after the other in the same run.

For each setup, ``concurrency`` clients submit no-op tasks round-robin across the instances with
``?wait_s`` (one request per task): completed tasks per second, the round trip, and the server's own
submit-to-start time (``queue_wait_s``: accepted, claimed, forked, started). With two instances or
more, a second figure isolates the wake-up: tasks submitted one at a time to an ``api`` instance,
which claims nothing, so that another instance, woken by NOTIFY, starts each. All instances share
the machine's cores, so more instances here measure contention, not scale-out.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from bench.plan import Context, Plan
from bench.service import log, server
from bench.stats import latency_summary, percentile, ratio, threaded
from harness.postgres import PostgresServer
from harness.server import Server, until

NOOP = {"kind": "diag.sleep", "payload": {"seconds": 0}}
BASELINE = "sqlite x1"
CONCURRENCY = 8
CROSS_TASKS = 20
WAIT_S = 60


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    pg = PostgresServer()
    setups: dict[str, dict[str, Any]] = {}
    try:
        for name, count in (("sqlite x1", 1), ("postgres x1", 1), ("postgres x2", 2), ("postgres x3", 3)):
            url = "" if name.startswith("sqlite") else pg.new_database()
            log(f"instances: {name}")
            setups[name] = _measure(ctx, name, url, count, plan.instances_tasks)
    finally:
        pg.close()
    return {"setups": setups, "summary": _summary(setups)}


def _measure(ctx: Context, name: str, url: str, count: int, tasks: int) -> dict[str, Any]:
    base = ctx.work_dir / f"instances-{name.replace(' ', '-')}"
    env = {"DATABASE_URL": url}
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(server(base / f"i{index}", None, env)) for index in range(count)]
        until(lambda: len(servers[0].admin.get("/admin/instances").json()) == count, 30, "every instance")
        turn = itertools.cycle(servers)
        waits_s: list[float] = []

        def run_one() -> None:
            waits_s.append(_queue_wait_s(next(turn)))

        threaded(run_one, 10, CONCURRENCY)  # warm-up: spares, learned estimates, connections
        waits_s.clear()
        loop = threaded(run_one, tasks, CONCURRENCY)
        result: dict[str, Any] = {
            "instances": count,
            **latency_summary(loop["latencies_s"], loop["wall_s"]),
            "errors": loop["errors"],
            "queue_wait_p50_ms": percentile(waits_s, 50) * 1000,
            "queue_wait_p95_ms": percentile(waits_s, 95) * 1000,
        }
        if count > 1:
            # Accepted by an ``api`` instance, which claims nothing: another instance, woken by
            # NOTIFY, starts each one.
            with server(base / "api", None, {**env, "ROLE": "api"}) as api:
                cross_s = [_queue_wait_s(api) for _ in range(CROSS_TASKS)]
            result["cross_wait_p50_ms"] = percentile(cross_s, 50) * 1000
        return result


def _queue_wait_s(srv: Server) -> float:
    """One no-op task in one request; its submit-to-start time by the server's own record."""
    task = srv.client.post("/v1/tasks", json=NOOP, params={"wait_s": WAIT_S}).json()
    if task.get("state") != "succeeded":
        raise RuntimeError(f"task ended {task.get('state')}: {task}")
    return float(task["queue_wait_s"])


def _summary(setups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One row per setup, with its throughput as a multiple of one instance on SQLite's, same run."""
    base = setups.get(BASELINE, {})
    rows = [
        {"setup": name, **s, "errors": len(s["errors"]),
         "tasks_per_s_ratio": ratio(s.get("tasks_per_s"), base.get("tasks_per_s"))}
        for name, s in setups.items()
    ]  # fmt: skip
    return {"rows": rows}
