"""Fault injection: killed workers, a killed zygote, a database that goes away, a full spool disk.
Whatever breaks, the service answers, and every task it accepted ends with a reason."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.postgres import PostgresServer
from harness.server import Server, until

FINAL = {"succeeded", "failed", "killed", "timed_out", "cancelled"}


def test_killing_random_workers_under_load_loses_nothing(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MAX_CONCURRENCY": "6", "MAX_ATTEMPTS": "5"}).start()
    retriable = [server.submit("diag.sleep", {"seconds": 1.0})["id"] for _ in range(30)]
    fragile = [server.submit("diag.alloc", {"mb": 10, "hold_s": 1.0})["id"] for _ in range(10)]
    killed: set[int] = set()
    rng = random.Random(7)
    while len(killed) < 12:
        workers = [w for w in server.admin.get("/admin/workers").json() if w["pid"] not in killed]
        if not workers:
            if all(server.task(i)["state"] in FINAL for i in retriable + fragile):
                break
            continue
        victim = rng.choice(workers)["pid"]
        os.kill(victim, signal.SIGKILL)
        killed.add(victim)
    done = {i: server.wait(i, timeout_s=120) for i in retriable + fragile}
    assert all(t["state"] in FINAL for t in done.values())
    assert all(done[i]["state"] == "succeeded" for i in retriable), "retriable tasks are retried"
    for task in (done[i] for i in fragile):
        assert task["state"] == "succeeded" or (task["reason"], task["signal"]) == ("crashed", 9)
    retried = sum(done[i]["attempts"] > 1 for i in retriable)
    crashed = sum(done[i]["state"] == "failed" for i in fragile)
    assert retried + crashed >= min(len(killed), 1)
    print(f"killed {len(killed)} workers: {retried} tasks retried, {crashed} failed as crashed, 0 lost")


def test_a_killed_zygote_comes_back_and_its_tasks_are_accounted_for(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server().start()
    retriable = server.submit("diag.sleep", {"seconds": 3})["id"]
    fragile = server.submit("diag.alloc", {"mb": 10, "hold_s": 30})["id"]
    until(lambda: len(server.admin.get("/admin/workers").json()) == 2, 15, "both tasks to run")
    old = server.zygote_pid()
    assert old is not None
    os.kill(old, signal.SIGKILL)
    new = until(lambda: (pid := server.zygote_pid()) != old and pid, 15, "a new zygote")
    assert new != old
    assert until(lambda: server.client.get("/readyz").status_code == 200, 15, "readiness")
    again = server.wait(retriable, timeout_s=30)
    assert again["state"] == "succeeded" and again["attempts"] == 2
    lost = server.wait(fragile)
    assert (lost["state"], lost["reason"]) == ("failed", "interrupted")
    assert server.wait(server.submit("diag.sleep")["id"])["state"] == "succeeded"


def test_postgres_outage_gives_503s_and_loses_no_outcome(make_server, postgres: PostgresServer) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"DATABASE_URL": postgres.new_database()}).start()
    running = server.submit("diag.sleep", {"seconds": 4})["id"]
    until(lambda: server.task(running)["state"] == "running", 15, "the task to run")
    postgres.stop()
    try:
        down = server.client.post("/v1/tasks", json={"kind": "diag.sleep", "payload": {}})
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert "database" in down.json()["detail"]
        assert server.client.get(f"/v1/tasks/{running}").status_code == 503
        assert server.client.get("/healthz").status_code == 200
        assert server.client.get("/readyz").status_code == 503
        until(lambda: not server.admin.get("/admin/workers").json(), 20, "the task to end while down")
    finally:
        postgres.start()
    done = until(lambda: (t := server.task(running))["state"] in FINAL and t, 20, "the outcome to be saved")
    assert done["state"] == "succeeded" and done["result"] == {"slept_s": 4.0}
    assert server.wait(server.submit("diag.sleep")["id"])["state"] == "succeeded"


def test_locked_sqlite_gives_503_then_recovers(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server().start()
    holder = sqlite3.connect(server.data_dir / "memvisor.db", timeout=1)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        locked = server.client.post("/v1/tasks", json={"kind": "diag.sleep", "payload": {}})
        assert locked.status_code == 503, locked.text
        assert "database" in locked.json()["detail"]
    finally:
        holder.rollback()
        holder.close()
    assert server.wait(server.submit("diag.sleep")["id"])["state"] == "succeeded"


@pytest.fixture
def tiny_spool(tmp_path: Path) -> Any:
    """DATA_DIR whose spool is a 1 MB tmpfs: a full disk, for real."""
    spool = tmp_path / "data0" / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=False, capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield tmp_path / "data0"
    subprocess.run(["umount", "-l", str(spool)], check=False)


def test_full_spool_disk_is_a_clear_507(make_server, tiny_spool: Path) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MAX_UPLOAD_MB": "5"}, data_dir=tiny_spool).start()
    files = {"files": ("big.bin", b"x" * (3 * 1024 * 1024), "application/octet-stream")}
    response = server.client.post("/v1/tasks/upload", data={"kind": "diag.sleep"}, files=files)
    assert response.status_code == 507, response.text
    assert "space" in response.json()["detail"]
    assert list((tiny_spool / "spool").iterdir()) == []
    assert server.client.get("/v1/tasks").json()["items"] == []


def test_health_answers_while_every_worker_is_busy(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MAX_CONCURRENCY": "8"}).start()
    ids = [server.submit("diag.alloc", {"mb": 30, "rate_mb_s": 0, "hold_s": 2})["id"] for _ in range(16)]
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            response = server.client.get("/healthz")
            latencies.append(response.elapsed.total_seconds())

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        for task_id in ids:
            server.wait(task_id, timeout_s=60)
    finally:
        stop.set()
        thread.join()
    latencies.sort()
    assert latencies[int(len(latencies) * 0.99) - 1] < 0.1, (
        f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.3f} s"
    )
