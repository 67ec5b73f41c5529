"""Admission control through the real service: the budget is never overcommitted, and a task that can
never fit is refused with both numbers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harness.server import Server


def _peak_overlap(tasks: list[dict[str, Any]]) -> tuple[int, float]:
    """Most tasks running at once, and the largest sum of their reservations at any instant."""
    events = []
    for task in tasks:
        start = datetime.fromisoformat(task["started_at"])
        end = datetime.fromisoformat(task["finished_at"])
        events += [(start, 1, task["estimate_mb"]), (end, -1, -task["estimate_mb"])]
    running, reserved, most, most_mb = 0, 0.0, 0, 0.0
    for _, step, mb in sorted(events, key=lambda e: (e[0], e[1])):  # ends sort before starts
        running += step
        reserved += mb
        most, most_mb = max(most, running), max(most_mb, reserved)
    return most, most_mb


def test_tasks_beyond_the_budget_queue_and_all_finish(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MEMORY_LIMIT_MB": "400"}).start()
    budget_mb = server.memory()["budget_mb"]
    payload = {"mb": 30, "hold_s": 0.6}
    ids = [server.submit("diag.alloc", payload, ceiling_mb=128)["id"] for _ in range(10)]
    done = [server.wait(task_id, timeout_s=90) for task_id in ids]
    assert sum(t["estimate_mb"] for t in done) > budget_mb, "the test must oversubscribe the budget"
    assert all(t["state"] == "succeeded" for t in done), [t["state"] for t in done]
    most, most_mb = _peak_overlap(done)
    assert 2 <= most < 10, f"{most} ran at once"
    assert most_mb <= budget_mb * 1.05, f"{most_mb} MB reserved at once, budget {budget_mb} MB"
    assert max(t["queue_wait_s"] for t in done) > 0.5, "some tasks must have waited for memory"


def test_a_task_that_can_never_fit_is_refused_with_numbers(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MEMORY_LIMIT_MB": "300"}).start()
    memory = server.memory()
    before = server.client.get("/v1/tasks").json()["items"]
    response = server.client.post(
        "/v1/tasks",
        json={"kind": "diag.alloc", "payload": {"mb": 10}, "ceiling_mb": memory["budget_mb"] + 50},
    )
    assert response.status_code == 422
    assert "budget" in response.json()["detail"]
    tiny = make_server(env={"MEMORY_LIMIT_MB": "120"}, data_dir=server.data_dir.parent / "tiny").start()
    tiny_budget = tiny.memory()["budget_mb"]
    refused = tiny.client.post("/v1/tasks", json={"kind": "diag.sleep", "payload": {}})
    assert refused.status_code == 422
    body = refused.json()
    assert body["reason"] == "too_big_for_budget"
    assert body["needed_mb"] == 40 and body["budget_mb"] == round(tiny_budget)
    assert f"needs 40 MB but the memory budget is {tiny_budget:.0f} MB" in body["detail"]
    assert server.client.get("/v1/tasks").json()["items"] == before
    assert tiny.client.get("/v1/tasks").json()["items"] == []
