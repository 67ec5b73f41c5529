"""Restarts and shutdown: every accepted task is accounted for, and no process outlives the service."""

from __future__ import annotations

import signal
import time

from harness.server import Server, marked_pids, until


def _running(server: Server, *ids: str) -> bool:
    return all(server.task(i)["state"] == "running" for i in ids)


def test_killed_service_recovers_every_task(make_server) -> None:  # type: ignore[no-untyped-def]
    first: Server = make_server(env={"MAX_CONCURRENCY": "2"}).start()
    retriable = first.submit("diag.sleep", {"seconds": 2})["id"]
    fragile = first.submit("diag.alloc", {"mb": 10, "hold_s": 60})["id"]
    queued = [first.submit("diag.sleep", {"seconds": 0})["id"] for _ in range(3)]
    until(lambda: _running(first, retriable, fragile), 15, "two tasks to run")
    first.kill()
    until(lambda: not marked_pids(first.marker), 10, "the zygote and workers to die with the service")

    second: Server = make_server(env={"MAX_CONCURRENCY": "2"}, data_dir=first.data_dir).start()
    again = second.wait(retriable, timeout_s=30)
    assert again["state"] == "succeeded" and again["attempts"] == 2
    lost = second.wait(fragile)
    assert lost["state"] == "failed" and lost["reason"] == "interrupted"
    assert all(second.wait(i)["state"] == "succeeded" for i in queued)


def test_sigterm_drains_then_interrupts_and_keeps_the_queue(make_server) -> None:  # type: ignore[no-untyped-def]
    env = {"MAX_CONCURRENCY": "3", "DRAIN_TIMEOUT_S": "2"}
    first: Server = make_server(env=env).start()
    short = first.submit("diag.sleep", {"seconds": 0.5})["id"]
    long_retriable = first.submit("diag.sleep", {"seconds": 30})["id"]
    long_fragile = first.submit("diag.alloc", {"mb": 10, "hold_s": 60})["id"]
    until(lambda: _running(first, short, long_retriable, long_fragile), 15, "three tasks to run")
    waiting = first.submit("diag.sleep", {"seconds": 0}, timeout_s=5)["id"]
    started = time.monotonic()
    first.signal(signal.SIGTERM)
    assert first.proc is not None
    assert first.proc.wait(25) == 0
    assert time.monotonic() - started < 2 + 10
    assert not first.leftovers()

    second: Server = make_server(env=env, data_dir=first.data_dir).start()
    assert second.task(short)["state"] == "succeeded"
    fragile = second.task(long_fragile)
    assert (fragile["state"], fragile["reason"]) == ("failed", "interrupted")
    retried = second.task(long_retriable)
    assert retried["state"] in ("queued", "running") and retried["attempts"] >= 1
    second.client.delete(f"/v1/tasks/{long_retriable}")
    assert second.wait(waiting)["state"] == "succeeded"
