"""Soak and load, against one real server (slow: minutes, run by CI).

Soak: 5,000 no-op and 500 allocating tasks; after a warm-up the API process must grow by less than
10 MB and leak no file descriptor, zombie or spool file. Load: 1,000 concurrent submissions get no
5xx, a 429 with Retry-After beyond the queue cap, and /healthz stays fast meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from harness.server import Server, marked_pids
from supervisor.memory import rss_mb

pytestmark = pytest.mark.slow
CLIENTS = 16


def _run(server: Server, kind: str, payload: dict[str, Any]) -> str:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        task = client.post("/v1/tasks", json={"kind": kind, "payload": payload}).json()
        while True:
            body = client.get(f"/v1/tasks/{task['id']}", params={"wait_s": 30}).json()
            if body["state"] not in ("queued", "running"):
                return str(body["state"])


def _batch(server: Server, jobs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    with ThreadPoolExecutor(CLIENTS) as pool:
        return list(pool.map(lambda job: _run(server, *job), jobs))


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(2400)
def test_soak_5000_noops_and_500_allocations(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"LOG_LEVEL": "warning"}).start()
    assert server.proc is not None
    pid = server.proc.pid
    noop = ("diag.sleep", {"seconds": 0})
    alloc = ("diag.alloc", {"mb": 20, "hold_s": 0})
    assert set(_batch(server, [noop] * 500)) == {"succeeded"}
    warm_rss, warm_fds = rss_mb([pid]), _fds(pid)
    started = time.monotonic()
    jobs = [alloc if i % 10 == 0 else noop for i in range(5000)]  # with the warm-up: 5,000 + 500
    states = _batch(server, jobs)
    elapsed = time.monotonic() - started
    assert states.count("succeeded") == len(jobs)
    server.wait_idle()
    growth_mb, fds = rss_mb([pid]) - warm_rss, _fds(pid)
    print(
        f"{len(jobs) + 500} tasks, {len(jobs) / elapsed:.0f}/s after warm-up; API RSS {warm_rss:.0f} -> "
        f"{warm_rss + growth_mb:.0f} MB; fds {warm_fds} -> {fds}"
    )
    assert growth_mb < 10
    assert fds <= warm_fds + 3
    assert not marked_pids(server.marker, zombies=True)
    assert not list((server.data_dir / "spool").iterdir())
    spares = server.spare_pids()
    assert len(spares) <= 1
    assert len(set(marked_pids(server.marker)) - set(spares)) == 2, "server and zygote"


async def _flood(url: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        body = {"kind": "diag.sleep", "payload": {"seconds": 0.2}}
        return await asyncio.gather(*(client.post("/v1/tasks", json=body) for _ in range(count)))


@pytest.mark.timeout(900)
def test_a_thousand_concurrent_submissions(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"MAX_QUEUE": "400", "LOG_LEVEL": "warning"}).start()
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not stop.is_set():
                latencies.append(client.get("/healthz").elapsed.total_seconds())

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        responses = asyncio.run(_flood(server.url, 1000))
        accepted = [r.json()["id"] for r in responses if r.status_code == 202]
        for task_id in accepted:
            server.wait(task_id, timeout_s=300)
    finally:
        stop.set()
        thread.join()
    statuses = [r.status_code for r in responses]
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert len(accepted) + len(refused) == 1000
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"{len(accepted)} accepted, {len(refused)} refused with 429; /healthz p99 {p99 * 1000:.0f} ms")
    assert p99 < 0.1
