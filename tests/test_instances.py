"""Several real instances (``python -m api`` servers) on one real PostgreSQL: deploys, crashes, boots
at once and scale-out lose no task and run none twice. Every execution of ``diag.record`` appends a
line (task id, pid) to a file, so a task that ran twice, or never, shows."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.server import Server, marked_pids, passable_for_workers, until

FINAL = ("succeeded", "failed", "killed", "timed_out", "cancelled")
HEARTBEAT_S = 0.5
DEAD_AFTER_S = 3.0


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    return postgres.new_database()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "INSTANCE_DEAD_AFTER_S": str(DEAD_AFTER_S),
        "TASK_MODULES": "tests.sample_kinds",
        # Every instance's workers append to one record file, outside any task's directories: the
        # filesystem fence would refuse it. These tests are about the queue; the fence has its own.
        "WORKER_LANDLOCK": "false",
        **extra,
    }


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """The record file, where the workers of every instance (the worker user, under a root service)
    can append to it."""
    shared = tmp_path / "records"
    shared.mkdir()
    shared.chmod(0o777)
    passable_for_workers(shared)
    return shared / "runs.txt"


def _record(server: Server, path: Path, seconds: float = 0.0, **fields: Any) -> str:
    return str(server.submit("diag.record", {"path": str(path), "seconds": seconds}, **fields)["id"])


def _runs(path: Path) -> Counter[str]:
    """How many times each task started, from the record file."""
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line)


def _states(server: Server, ids: list[str]) -> dict[str, str]:
    return {task_id: server.task(task_id)["state"] for task_id in ids}


def _all_final(server: Server, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    tasks = {task_id: server.task(task_id) for task_id in ids}
    return tasks if all(t["state"] in FINAL for t in tasks.values()) else None


def _live(server: Server) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = server.admin.get("/admin/instances").json()
    return body


def test_zero_downtime_deploy_loses_nothing_and_runs_nothing_twice(make_server, database, record) -> None:  # type: ignore[no-untyped-def]
    a: Server = make_server(env=_env(database, MAX_CONCURRENCY="4")).start()
    first = [_record(a, record, seconds=2) for _ in range(4)]
    until(lambda: all(s == "running" for s in _states(a, first).values()), 20, "A to run four tasks")
    b: Server = make_server(env=_env(database, MAX_CONCURRENCY="4")).start()  # the new deploy
    until(lambda: len(_live(a)) == 2, 10, "A to see B")
    more = [_record(a, record, seconds=0.2) for _ in range(24)]  # A still accepts
    assert a.stop() == 0  # SIGTERM: A drains its running tasks and leaves the queue to B
    tasks = until(lambda: _all_final(b, first + more), 90, "every task to end")
    assert {t["state"] for t in tasks.values()} == {"succeeded"}, tasks
    runs = _runs(record)
    assert set(runs) == set(first + more) and max(runs.values()) == 1, runs
    assert all(tasks[i]["attempts"] == 1 for i in first), "A's running tasks finished on A, once"
    assert [i["id"] for i in _live(b)] == [i["id"] for i in _live(b) if i["self"]], "A's row is gone"


def test_killed_instance_tasks_are_rescued_by_a_peer(make_server, database, record) -> None:  # type: ignore[no-untyped-def]
    # In a process group of its own, so that the whole instance (server, zygote, workers) dies at once.
    a: Server = make_server(env=_env(database, MAX_CONCURRENCY="3"), wrap=["setsid"]).start()
    b: Server = make_server(env=_env(database, MAX_CONCURRENCY="3")).start()
    b.admin.post("/admin/drain")  # B claims nothing until A is dead: A's tasks are A's
    retriable = [_record(a, record, seconds=60) for _ in range(2)]
    fragile = a.submit("diag.alloc", {"mb": 10, "hold_s": 60})["id"]
    until(lambda: set(_states(a, [*retriable, fragile]).values()) == {"running"}, 20, "A to run three")
    assert a.proc is not None
    b.admin.post("/admin/resume")
    killed_at = time.monotonic()
    os.killpg(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    until(lambda: b.task(fragile)["state"] == "failed", DEAD_AFTER_S + HEARTBEAT_S + 10, "the rescue")
    rescued_s = time.monotonic() - killed_at
    lost = b.task(fragile)
    assert lost["reason"] == "interrupted"
    until(lambda: all(b.task(i)["attempts"] == 2 for i in retriable), 20, "B to run A's retriable tasks")
    print(f"rescued {rescued_s:.2f} s after the kill (dead after {DEAD_AFTER_S} s, beat {HEARTBEAT_S} s)")
    assert rescued_s <= DEAD_AFTER_S + HEARTBEAT_S + 2  # slack for a loaded machine
    until(lambda: not marked_pids(a.marker), 10, "A's processes to be gone")
    for task_id in retriable:
        b.client.delete(f"/v1/tasks/{task_id}")
    assert {b.wait(i)["state"] for i in retriable} == {"cancelled"}
    assert len(_live(b)) == 1, "the dead instance's row was removed"


def test_three_instances_boot_at_once_on_an_empty_database(make_server, database) -> None:  # type: ignore[no-untyped-def]
    servers: list[Server] = [make_server(env=_env(database)) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: s.start(ready_timeout_s=60), servers))
    until(lambda: len(_live(servers[0])) == 3, 10, "three live instances")
    ids = {row["id"] for row in _live(servers[0])}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids), "a fresh id per boot"
    assert all(s.wait(s.submit("diag.sleep", {"seconds": 0})["id"])["state"] == "succeeded" for s in servers)


def test_four_instances_run_each_of_400_tasks_exactly_once(make_server, database, record) -> None:  # type: ignore[no-untyped-def]
    servers: list[Server] = [make_server(env=_env(database)) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: s.start(ready_timeout_s=60), servers))
        batches = list(pool.map(lambda s: [_record(s, record) for _ in range(100)], servers))
    ids = [task_id for batch in batches for task_id in batch]
    tasks = until(lambda: _all_final(servers[0], ids), 180, "400 tasks to end", every_s=0.5)
    assert Counter(t["state"] for t in tasks.values()) == {"succeeded": 400}
    runs = _runs(record)
    assert len(runs) == 400 and set(runs.values()) == {1}, "each task ran exactly once"


def test_split_roles_api_instance_serves_workers_run(make_server, database) -> None:  # type: ignore[no-untyped-def]
    """An ``api`` instance (no zygote, no worker) and two ``worker`` instances: submits, ``?wait_s``,
    SSE and uploads through the api instance; the tasks run on the workers."""
    api: Server = make_server(env=_env(database, ROLE="api")).start()
    workers = [make_server(env=_env(database, ROLE="worker")).start() for _ in range(2)]
    assert api.zygote_pid() is None and marked_pids(api.marker) == [api.proc.pid]  # type: ignore[union-attr]
    assert workers[0].client.get("/healthz").status_code == 200
    assert workers[0].client.get("/v1/tasks").status_code == 404, "a worker's HTTP serves health only"
    until(lambda: {i["role"] for i in _live(api)} == {"api", "worker"} and len(_live(api)) == 3, 10, "peers")

    done = api.client.post(
        "/v1/tasks", json={"kind": "diag.sleep", "payload": {"seconds": 0.2}}, params={"wait_s": 30}
    )
    assert done.status_code == 200 and done.json()["state"] == "succeeded", done.text

    # It says "allocated" as progress after 2 s (the stream is open by then), then holds a second.
    task = api.submit("diag.alloc", {"mb": 4, "rate_mb_s": 2, "hold_s": 1})
    events = _sse_events(api, task["id"])
    states = [data["state"] for event, data in events if event == "state"]
    assert states[0] in ("queued", "running") and states[-1] == "succeeded", states
    assert "running" in states, "the start on a worker instance reached the api instance's stream"
    progress = [data for event, data in events if event == "progress"]
    assert progress and progress[0]["message"] == "allocated", events

    long = api.submit("diag.sleep", {"seconds": 60})["id"]
    until(lambda: api.task(long)["state"] == "running", 20, "a worker instance to run it")
    assert api.client.delete(f"/v1/tasks/{long}").status_code == 200, (
        "asked of its owner through the database"
    )
    cancelled = api.wait(long, timeout_s=20)
    assert (cancelled["state"], cancelled["reason"]) == ("cancelled", "cancelled")

    files = {"files": ("page.bin", b"x" * 3000, "application/octet-stream")}
    data = {"kind": "sample.echo", "payload": json.dumps({"text": "with file"})}
    uploaded = api.client.post("/v1/tasks/upload", data=data, files=files, params={"wait_s": 30})
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["result"] == {"text": "with file", "file_bytes": 3000}
    assert not list((api.data_dir / "spool").iterdir()), "the api instance keeps no copy"
    for worker in workers:
        spool = worker.data_dir / "spool"
        assert not (spool.exists() and list(spool.iterdir())), "nor does the worker, once it ran"
    with psycopg.connect(api.env["DATABASE_URL"]) as conn:
        left = conn.execute("SELECT count(*) FROM memvisor.task_files").fetchone()
    assert left == (0,), "the stored file went with the task's final state"

    # An output file written on a worker instance, served by the api instance from the database.
    line, repeat = "output of a worker instance ", 50_000
    text = line * repeat  # 1.4 MB: more than one chunk
    wrote = api.client.post(
        "/v1/tasks",
        json={"kind": "sample.write", "payload": {"name": "out.txt", "text": line, "repeat": repeat}},
        params={"wait_s": 30},
    )
    assert wrote.status_code == 200 and wrote.json()["state"] == "succeeded", wrote.text
    assert wrote.json()["result"]["files"] == [
        {"name": "out.txt", "size_bytes": len(text), "media_type": "text/plain"}
    ]
    served = api.client.get(f"/v1/tasks/{wrote.json()['id']}/files/out.txt")
    assert served.status_code == 200 and served.text == text
    assert served.headers["content-disposition"] == 'attachment; filename="out.txt"'
    assert api.client.get(f"/v1/tasks/{wrote.json()['id']}/files/other.txt").status_code == 404
    for worker in workers:
        outputs_dir = worker.data_dir / "outputs"
        assert not (outputs_dir.exists() and list(outputs_dir.iterdir())), "the database holds them"


def _sse_events(server: Server, task_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    with httpx.stream("GET", f"{server.url}/v1/tasks/{task_id}/events", timeout=30) as response:
        event = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("state", "progress"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    return events


def test_through_pgbouncer_in_transaction_mode_by_polling(
    make_server, postgres, pgbouncer: PgBouncer, record
) -> None:  # type: ignore[no-untyped-def]
    name = postgres.new_database().rsplit("/", 1)[1]
    env = _env(pgbouncer.url(name), QUEUE_POLL_INTERVAL_S="0.2")
    # Booted one after the other: detection is a heuristic that other clients' traffic through the
    # same pooler can fool (DATABASE_POOLER=transaction is the certain way); concurrent boots are
    # tested directly on PostgreSQL above.
    servers: list[Server] = [make_server(env=env).start(ready_timeout_s=60) for _ in range(2)]
    assert all("LISTEN is not delivered" in s.log() for s in servers), "it says it polls"
    with ThreadPoolExecutor(2) as pool:
        batches = list(pool.map(lambda s: [_record(s, record) for _ in range(20)], servers))
    ids = [task_id for batch in batches for task_id in batch]
    tasks = until(lambda: _all_final(servers[1], ids), 90, "40 tasks to end", every_s=0.5)
    assert Counter(t["state"] for t in tasks.values()) == {"succeeded": 40}
    assert set(_runs(record).values()) == {1} and len(_runs(record)) == 40
    # A task submitted to one instance and watched through the other, by polling.
    task_id = servers[0].submit("diag.sleep", {"seconds": 0.3})["id"]
    assert servers[1].wait(task_id, timeout_s=30)["state"] == "succeeded"


def test_wait_through_another_instance_returns_within_the_wake_up(make_server, database) -> None:  # type: ignore[no-untyped-def]
    """NOTIFY carries the end of a task run by one instance to a waiter on another at once."""
    a: Server = make_server(env=_env(database)).start()
    b: Server = make_server(env=_env(database, ROLE="api", QUEUE_POLL_INTERVAL_S="30")).start()
    assert "wake-ups NOTIFY + poll" in b.log()
    task_id = b.submit("diag.sleep", {"seconds": 1})["id"]
    box: dict[str, Any] = {}

    def wait() -> None:
        box["task"] = b.client.get(f"/v1/tasks/{task_id}", params={"wait_s": 20}).json()
        box["at"] = time.monotonic()

    waiter = threading.Thread(target=wait)
    waiter.start()
    final = a.wait(task_id)
    seen_at = time.monotonic()
    waiter.join(25)
    assert final["state"] == box["task"]["state"] == "succeeded"
    # With a 30 s poll and a re-read every 5 s, only the notification can wake the waiter this soon.
    assert box["at"] - seen_at < 2


def test_split_blueprint_runs_an_api_web_service_and_a_worker() -> None:
    blueprint = yaml.safe_load((Path(__file__).resolve().parent.parent / "render.split.yaml").read_text())
    services = {s["type"]: s for s in blueprint["services"]}
    assert set(services) == {"web", "worker", "pserv"}  # the pserv: the shared Chroma server
    env = {kind: {v["key"]: v for v in services[kind]["envVars"] if "key" in v} for kind in ("web", "worker")}
    assert {kind: env[kind]["ROLE"]["value"] for kind in env} == {"web": "api", "worker": "worker"}
    for kind in env:
        assert {"fromGroup": "memvisor-shared"} in services[kind]["envVars"]
        assert env[kind]["CHROMA_URL"]["fromService"]["name"] == services["pserv"]["name"]
    assert all(s["runtime"] == "docker" for s in services.values())
    shared = {v["key"]: v for v in blueprint["envVarGroups"][0]["envVars"]}
    assert shared["DATABASE_URL"] == {"key": "DATABASE_URL", "sync": False}, (
        "the shared database is asked for"
    )
    drain_s = float(shared["DRAIN_TIMEOUT_S"]["value"])
    assert all(drain_s + 10 <= services[kind]["maxShutdownDelaySeconds"] for kind in env)
