"""Every path that ends a task without running it to its end removes its uploaded files: a cancel while
queued, a refusal at claim (its kind is gone, or it no longer fits any budget), and an interruption found
at rescue. SQLite's spool is the only copy of the files, so each path must remove it itself."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.server import Server, marked_pids, until

SAMPLE = {"TASK_MODULES": "tests.sample_kinds", "MAX_CONCURRENCY": "1", "SPARE_WORKERS": "0"}


def _upload(server: Server, kind: str, payload: dict[str, Any]) -> str:
    files = {"files": ("page.bin", b"x" * 4096, "application/octet-stream")}
    data = {"kind": kind, "payload": json.dumps(payload)}
    response = server.client.post("/v1/tasks/upload", data=data, files=files)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _spooled(server: Server, task_id: str) -> list[str]:
    directory = server.data_dir / "spool" / task_id
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _running(server: Server, task_id: str) -> bool:
    return bool(server.task(task_id)["state"] == "running")


def test_a_task_cancelled_while_queued_leaves_no_spool(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env=SAMPLE).start()
    blocker = server.submit("diag.sleep", {"seconds": 60})["id"]
    until(lambda: _running(server, blocker), 15, "the blocker to take the only slot")
    queued = _upload(server, "sample.echo", {"text": "never runs"})
    assert server.task(queued)["state"] == "queued"
    assert _spooled(server, queued) == ["page.bin"], "its file waits with it"
    cancelled = server.client.delete(f"/v1/tasks/{queued}").json()
    assert (cancelled["state"], cancelled["attempts"]) == ("cancelled", 0)
    assert _spooled(server, queued) == []
    server.client.delete(f"/v1/tasks/{blocker}")
    assert server.wait(blocker)["state"] == "cancelled"


@pytest.mark.parametrize(
    ("restart_env", "error_type", "reason"),
    [
        ({"TASK_MODULES": ""}, "UnknownKind", "error"),  # the kind is no longer registered
        ({**SAMPLE, "MEMORY_LIMIT_MB": "40"}, "AdmissionRefused", "too_big_for_budget"),  # no budget left
    ],
    ids=["kind_gone", "too_big"],
)
def test_tasks_interrupted_at_rescue_or_refused_at_claim_leave_no_spool(  # type: ignore[no-untyped-def]
    make_server, restart_env: dict[str, str], error_type: str, reason: str
) -> None:
    first: Server = make_server(env=SAMPLE).start()
    # diag.alloc is not retriable: the rescue fails it (interrupted) rather than requeuing it.
    running = _upload(first, "diag.alloc", {"mb": 10, "hold_s": 60})
    until(lambda: _running(first, running), 15, "the running task to start")
    queued = _upload(first, "sample.echo", {"text": "waits behind it"})
    assert _spooled(first, running) == ["page.bin"] and _spooled(first, queued) == ["page.bin"]
    first.kill()
    until(lambda: not marked_pids(first.marker), 10, "the zygote and workers to die with the service")

    second: Server = make_server(env=restart_env, data_dir=first.data_dir).start()
    lost = second.wait(running)
    assert (lost["state"], lost["reason"]) == ("failed", "interrupted")
    refused = second.wait(queued)
    assert (refused["state"], refused["reason"]) == ("failed", reason)
    assert refused["error"]["type"] == error_type and refused["attempts"] == 0
    assert _spooled(second, running) == [], "interrupted at rescue"
    assert _spooled(second, queued) == [], "refused at claim"
