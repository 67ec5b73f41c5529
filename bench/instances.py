"""Scenario 6, instances: one queue in PostgreSQL shared by 1, 2 and 3 instances, against one instance
on SQLite (the baseline), in the same run.

For each setup, ``concurrency`` clients submit no-op tasks round-robin across the instances with
``?wait_s`` (one request per task): completed tasks per second, the round trip, and the server's own
submit-to-start time (``queue_wait_s``: accepted, claimed, forked, started). With two instances or
more, a second figure isolates the wake-up: tasks submitted one at a time to an ``api`` instance,
which claims nothing, so that another instance, woken by NOTIFY, starts each.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bench.loop import threaded
from bench.plan import Context, Plan
from bench.report_format import fmt, table
from bench.service import log
from bench.stats import latency_summary, percentile, ratio
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
    env = {"DATABASE_URL": url, "LOG_LEVEL": "warning"}
    servers = [Server(base / f"i{index}", env=env) for index in range(count)]
    try:
        for srv in servers:
            srv.start(ready_timeout_s=60)
        until(lambda: len(servers[0].admin.get("/admin/instances").json()) == count, 30, "every instance")
        turn = itertools.cycle(servers)
        waits_s: list[float] = []

        def run_one() -> None:
            srv = next(turn)
            task = srv.client.post("/v1/tasks", json=NOOP, params={"wait_s": WAIT_S}).json()
            if task.get("state") != "succeeded":
                raise RuntimeError(f"task ended {task.get('state')}: {task}")
            waits_s.append(float(task["queue_wait_s"]))

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
            result.update(_cross(base, env))
        return result
    finally:
        for srv in servers:
            srv.stop()
            srv.close()


def _cross(base: Path, env: dict[str, str]) -> dict[str, Any]:
    """Submit-to-start of tasks accepted by an ``api`` instance, which claims nothing: another
    instance, woken by NOTIFY, starts each one."""
    api = Server(base / "api", env={**env, "ROLE": "api"})
    waits_s: list[float] = []
    try:
        api.start(ready_timeout_s=60)
        for _ in range(CROSS_TASKS):
            task = api.client.post("/v1/tasks", json=NOOP, params={"wait_s": WAIT_S}).json()
            waits_s.append(float(task["queue_wait_s"]))
    finally:
        api.stop()
        api.close()
    return {"cross_wait_p50_ms": percentile(waits_s, 50) * 1000}


def _summary(setups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = setups.get(BASELINE, {})
    return {
        name: {
            "tasks_per_s_vs_sqlite": ratio(s.get("tasks_per_s"), base.get("tasks_per_s")),
            "p50_vs_sqlite": ratio(s.get("p50_ms"), base.get("p50_ms")),
        }
        for name, s in setups.items()
    }


def render(data: dict[str, Any]) -> str:
    header = [
        "setup",
        "tasks/s",
        "x SQLite",
        "round trip p50 ms",
        "submit-to-start p50 / p95 ms",
        "started by another instance p50 ms",
        "n",
        "errors",
    ]
    rows = []
    for name, s in data["setups"].items():
        rows.append(
            [
                name,
                fmt(s.get("tasks_per_s")),
                fmt(data["summary"][name]["tasks_per_s_vs_sqlite"]),
                fmt(s.get("p50_ms")),
                f"{fmt(s.get('queue_wait_p50_ms'))} / {fmt(s.get('queue_wait_p95_ms'))}",
                fmt(s.get("cross_wait_p50_ms")) if "cross_wait_p50_ms" in s else "-",
                str(s.get("tasks")),
                str(len(s.get("errors", []))),
            ]
        )
    return table(header, rows)
