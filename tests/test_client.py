"""memvisor.Client and AsyncClient against one real server: auth, uploads, events, retries after
Retry-After, idempotent submits, and one typed error per way a task can end."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import memvisor
from harness.server import Server, free_port, until
from memvisor import AsyncClient, Client
from memvisor.http import Retry
from memvisor.sse import Event

API_KEY = "client-key-0001"


@pytest.fixture(scope="module")
def server(make_module_server) -> Server:  # type: ignore[no-untyped-def]
    env = {"API_KEYS": API_KEY, "TASK_MODULES": "tests.sample_kinds", "DISABLE_OCR": "true"}
    server: Server = make_module_server(env=env, headers={"X-API-Key": API_KEY})
    return server.start()


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, api_key=API_KEY) as client:
        yield client
    server.wait_idle()


def test_an_api_key_or_a_bearer_token_is_sent_and_checked(server: Server) -> None:
    with Client(server.url, token=API_KEY) as bearer:
        assert bearer.run("sample.echo", {"text": "bearer"})["text"] == "bearer"
    with Client(server.url) as anonymous, pytest.raises(memvisor.Unauthorized) as refused:
        anonymous.submit("sample.echo", {"text": "x"})
    assert refused.value.status == 401


def test_uploads_reach_the_kind(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"n" * 321)
    assert client.run("sample.echo", {"text": "a"}, files=[path]) == {"text": "a", "file_bytes": 321}
    assert client.run("sample.echo", {"text": "b"}, files=[("x.bin", b"12345")])["file_bytes"] == 5


def test_async_client_runs_uploads_and_streams_events(server: Server) -> None:
    async def scenario() -> tuple[dict[str, Any], list[Event]]:
        async with AsyncClient(server.url, api_key=API_KEY) as client:
            result = await client.run("sample.echo", {"text": "async"}, files={"a.txt": b"abc"})
            # 2 s to allocate: the stream is open before the progress it must carry (none is replayed)
            task = await client.submit("diag.alloc", {"mb": 10, "rate_mb_s": 5, "hold_s": 0.3})
            events = [event async for event in task.events()]
            return result, events

    result, events = asyncio.run(scenario())
    assert result == {"text": "async", "file_bytes": 3}
    assert events[-1].event == "state" and events[-1].data["state"] == "succeeded"
    assert events[-1].data["result"] == {"allocated_mb": 10}
    assert any(e.event == "progress" and e.data["message"] == "allocated" for e in events)


def test_sync_events_end_with_the_final_task(client: Client) -> None:
    # 2 s to allocate: the stream is open before the progress it must carry (none is replayed)
    task = client.submit("diag.alloc", {"mb": 10, "rate_mb_s": 5})
    events = list(task.events())
    assert [e.data["state"] for e in events if e.event == "state"][-1] == "succeeded"
    assert any(e.event == "progress" and e.data["message"] == "allocated" for e in events)


@pytest.mark.parametrize(
    ("kind", "payload", "fields", "error", "reason"),
    [
        ("diag.alloc", {"mb": 400}, {}, memvisor.MemoryCeilingExceeded, "memory_ceiling"),
        ("diag.sleep", {"seconds": 30}, {"timeout_s": 1}, memvisor.TaskTimedOut, "timeout"),
        ("diag.crash", {}, {}, memvisor.TaskCrashed, "crashed"),
        ("diag.raise", {"message": "no luck"}, {}, memvisor.TaskFailed, "error"),
    ],
)
def test_each_outcome_raises_its_typed_error(
    client: Client, *, kind: str, payload: dict[str, Any], fields: dict[str, Any], error: type, reason: str
) -> None:
    with pytest.raises(error) as raised:
        client.run(kind, payload, **fields)
    assert isinstance(raised.value, memvisor.TaskError) and isinstance(raised.value, memvisor.MemvisorError)
    assert raised.value.reason == reason
    assert raised.value.task["kind"] == kind
    assert client.get(raised.value.task["id"])["reason"] == reason


def test_a_cancelled_task_raises_task_cancelled(client: Client) -> None:
    task = client.submit("diag.sleep", {"seconds": 60})
    until(lambda: client.get(task.id)["state"] == "running", 30, "the task to run")
    task.cancel()
    with pytest.raises(memvisor.TaskCancelled) as raised:
        task.result()
    assert raised.value.reason == "cancelled" and raised.value.task["id"] == task.id
    with pytest.raises(memvisor.NotCancellable):
        client.cancel(task.id)


def test_async_client_raises_the_same_typed_errors(server: Server) -> None:
    async def scenario() -> list[memvisor.TaskError]:
        async with AsyncClient(server.url, api_key=API_KEY) as client:
            raised = []
            for kind, payload in (("diag.alloc", {"mb": 400}), ("diag.raise", {})):
                try:
                    await client.run(kind, payload)
                except memvisor.TaskError as exc:
                    raised.append(exc)
            return raised

    ceiling, failed = asyncio.run(scenario())
    assert isinstance(ceiling, memvisor.MemoryCeilingExceeded) and ceiling.task["peak_rss_mb"] >= 256
    assert isinstance(failed, memvisor.TaskFailed) and failed.task["error"]["type"] == "RuntimeError"
    server.wait_idle()


def test_refusals_are_typed(client: Client) -> None:
    with pytest.raises(memvisor.InvalidTask) as unknown:
        client.submit("no.such.kind")
    assert "sample.echo" in unknown.value.body["known_kinds"]
    with pytest.raises(memvisor.InvalidTask):
        client.submit("sample.echo", {"text": 5})
    with pytest.raises(memvisor.TaskNotFound):
        client.get("0" * 32)


def test_a_full_queue_is_retried_after_retry_after(server: Server, client: Client) -> None:
    """One task runs, one waits (MAX_QUEUE=1): the next submit gets 429 until a place frees up."""
    server.admin.patch("/admin/limits", json={"max_queue": 1, "max_concurrency": 1})
    blockers: list[str] = []
    retries: list[Retry] = []

    def on_retry(retry: Retry) -> None:
        retries.append(retry)
        if len(retries) == 1:  # free the queue's one place: the retry must then get in
            server.client.delete(f"/v1/tasks/{blockers[1]}")

    try:
        blockers.append(server.submit("diag.sleep", {"seconds": 60})["id"])
        until(lambda: server.task(blockers[0])["state"] == "running", 30, "the first task to run")
        blockers.append(server.submit("diag.sleep", {"seconds": 60})["id"])
        with Client(server.url, api_key=API_KEY, on_retry=on_retry) as patient:
            started = time.monotonic()
            task = patient.submit("sample.echo", {"text": "third"})
            waited_s = time.monotonic() - started
        blockers.append(task.id)
        assert [(r.attempt, r.status) for r in retries] == [(1, 429)]
        assert retries[0].delay_s >= 1 and waited_s >= retries[0].delay_s
        impatient = Client(server.url, api_key=API_KEY, retries=0)
        with impatient, pytest.raises(memvisor.QueueFull) as full:
            impatient.submit("sample.echo", {"text": "fourth"})
        assert full.value.status == 429 and full.value.retry_after_s is not None
    finally:
        for task_id in reversed(blockers):  # the queued one first, while it cannot start
            server.client.delete(f"/v1/tasks/{task_id}")
        server.admin.patch("/admin/limits", json={"max_queue": 1000, "max_concurrency": 16})
    assert client.get(blockers[2])["state"] == "cancelled"


def test_a_repeated_idempotency_key_returns_the_same_task(
    server: Server, client: Client, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    first = client.submit("sample.echo", {"text": "once"}, idempotency_key=key)
    again = client.submit("sample.echo", {"text": "once"}, idempotency_key=key)
    assert again.id == first.id
    raw = server.client.post(
        "/v1/tasks",
        json={"kind": "sample.echo", "payload": {"text": "once"}},
        headers={"Idempotency-Key": key},
    )
    assert raw.status_code in (200, 202) and raw.json()["id"] == first.id
    with pytest.raises(memvisor.InvalidTask, match="different kind or payload"):
        client.submit("sample.echo", {"text": "other"}, idempotency_key=key)
    assert [t["id"] for t in client.tasks(kind="sample.echo", limit=500)].count(first.id) == 1
    # With files: the same task again, and the second copy of the file is not kept.
    file_key = uuid.uuid4().hex
    upload = client.submit("sample.echo", {"text": "f"}, files=[("a.txt", b"xy")], idempotency_key=file_key)
    assert (
        client.submit("sample.echo", {"text": "f"}, files=[("a.txt", b"xy")], idempotency_key=file_key).id
        == upload.id
    )
    assert upload.result()["file_bytes"] == 2
    spool = server.data_dir / "spool"
    until(lambda: not list(spool.iterdir()), 10, "the spool to be emptied")


def test_each_submit_sends_a_fresh_idempotency_key(server: Server) -> None:
    """Two logical submits of the same work are two tasks; the key is per submit, not per payload."""
    seen: list[str] = []
    with Client(server.url, api_key=API_KEY) as client:
        client._http.event_hooks["request"].append(
            lambda r: seen.append(r.headers.get("Idempotency-Key", ""))
        )
        a = client.submit("sample.echo", {"text": "same"})
        b = client.submit("sample.echo", {"text": "same"})
        a.result()
        b.result()
    assert a.id != b.id and len(set(seen[:2])) == 2 and all(seen[:2])


def test_an_unreachable_service_raises_after_bounded_retries() -> None:
    retries: list[Retry] = []
    client = Client(f"http://127.0.0.1:{free_port()}", retries=2, on_retry=retries.append)
    with client, pytest.raises(memvisor.Unreachable):
        client.get("x")
    assert [r.status for r in retries] == [None, None]
    assert isinstance(memvisor.Unreachable("x"), ConnectionError)


def test_the_client_speaks_plain_http(server: Server) -> None:
    """The same routes a curl user sees: nothing private between the client and the server."""
    body = httpx.get(f"{server.url}/v1/kinds", headers={"X-API-Key": API_KEY}).json()
    with Client(server.url, api_key=API_KEY) as client:
        assert client.kinds() == body
