"""Each way a task can end, through the real service: the state, the reason, and what was recorded."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from harness.server import Server, until
from workers.protocol import MAX_FRAME_BYTES


@pytest.fixture(scope="module")
def shared(make_module_server, database_url: str) -> Server:  # type: ignore[no-untyped-def]
    """Every lifecycle test runs against SQLite and against a real PostgreSQL server."""
    started: Server = make_module_server(env={"DATABASE_URL": database_url}).start()
    return started


@pytest.fixture
def server(shared: Server) -> Iterator[Server]:
    yield shared
    shared.wait_idle()  # no worker, and no process of one, outlives a test


def test_noop_task_succeeds_with_its_result(server: Server) -> None:
    task = server.submit("diag.sleep", {"seconds": 0})
    assert task["state"] == "queued"
    done = server.wait(task["id"])
    assert done["state"] == "succeeded"
    assert done["result"] == {"slept_s": 0.0}
    assert done["exit_code"] == 0 and done["signal"] is None
    assert done["attempts"] == 1
    assert done["started_at"] and done["finished_at"]


def test_exception_ends_failed_with_type_and_message(server: Server) -> None:
    done = server.wait(server.submit("diag.raise", {"message": "boom 42"})["id"])
    assert done["state"] == "failed"
    assert done["reason"] == "error"
    assert done["error"] == {"type": "RuntimeError", "message": "boom 42"}


def test_a_result_over_the_frame_limit_ends_failed_once_naming_the_limit(server: Server) -> None:
    # diag.sleep is retriable: a result lost in transit would read "crashed" and run again.
    done = server.wait(server.submit("diag.sleep", {"pad_kb": 17 * 1024})["id"])
    assert (done["state"], done["reason"], done["attempts"]) == ("failed", "error", 1)
    assert done["error"]["type"] == "ResultTooLargeError"
    assert str(MAX_FRAME_BYTES) in done["error"]["message"]


def test_segfault_ends_failed_crashed_with_signal(server: Server) -> None:
    done = server.wait(server.submit("diag.crash")["id"])
    assert done["state"] == "failed"
    assert done["reason"] == "crashed"
    assert done["signal"] == signal.SIGSEGV
    assert "signal 11" in done["error"]["message"]
    assert server.client.get("/healthz").status_code == 200


def test_timeout_terminates_and_ends_timed_out(server: Server) -> None:
    task = server.submit("diag.sleep", {"seconds": 60}, timeout_s=0.5)
    done = server.wait(task["id"], timeout_s=20)
    assert done["state"] == "timed_out"
    assert done["reason"] == "timeout"
    assert done["signal"] == signal.SIGTERM
    assert done["run_s"] < 10


def test_cancel_running_task(server: Server) -> None:
    task = server.submit("diag.sleep", {"seconds": 60})
    until(lambda: server.task(task["id"])["state"] == "running", 10, "the task to start")
    response = server.client.delete(f"/v1/tasks/{task['id']}")
    assert response.status_code == 200
    done = server.wait(task["id"], timeout_s=20)
    assert done["state"] == "cancelled"
    assert done["reason"] == "cancelled"
    assert server.client.delete(f"/v1/tasks/{task['id']}").status_code == 409


def test_cancel_queued_task_never_runs(make_server, database_url: str, request) -> None:  # type: ignore[no-untyped-def]
    # A database of its own: the module's shared server on the same one is a peer and would run the
    # task this one keeps queued.
    own_url = request.getfixturevalue("postgres").new_database() if database_url else ""
    server = make_server(env={"MAX_CONCURRENCY": "1", "DATABASE_URL": own_url}).start()
    blocker = server.submit("diag.sleep", {"seconds": 30})
    queued = server.submit("diag.sleep", {"seconds": 0})
    until(lambda: server.task(blocker["id"])["state"] == "running", 10, "the blocker to start")
    cancelled = server.client.delete(f"/v1/tasks/{queued['id']}").json()
    assert cancelled["state"] == "cancelled"
    assert cancelled["started_at"] is None and cancelled["attempts"] == 0
    server.client.delete(f"/v1/tasks/{blocker['id']}")
    assert server.wait(blocker["id"])["state"] == "cancelled"


def test_unknown_and_missing_tasks(server: Server) -> None:
    response = server.client.post("/v1/tasks", json={"kind": "no.such", "payload": {}})
    assert response.status_code == 422
    assert "diag.sleep" in response.json()["known_kinds"]
    assert server.client.get("/v1/tasks/" + "0" * 32).status_code == 404
    assert server.client.delete("/v1/tasks/" + "0" * 32).status_code == 404


def test_invalid_payload_is_refused_and_nothing_is_stored(server: Server) -> None:
    before = server.client.get("/v1/tasks").json()["items"]
    response = server.client.post("/v1/tasks", json={"kind": "diag.alloc", "payload": {"mb": -5}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["payload", "mb"]
    for body in ({"kind": "diag.sleep", "timeout_s": -1}, {"kind": "diag.sleep", "ceiling_mb": 10**9}):
        assert server.client.post("/v1/tasks", json=body).status_code == 422
    assert server.client.get("/v1/tasks").json()["items"] == before


def test_get_with_wait_returns_when_final(server: Server) -> None:
    task = server.submit("diag.sleep", {"seconds": 0.3})
    body = server.client.get(f"/v1/tasks/{task['id']}", params={"wait_s": 20}).json()
    assert body["state"] == "succeeded"
    still = server.submit("diag.sleep", {"seconds": 5})
    body = server.client.get(f"/v1/tasks/{still['id']}", params={"wait_s": 0.2}).json()
    assert body["state"] in ("queued", "running")
