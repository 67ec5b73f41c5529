"""Closed-loop drivers: ``concurrency`` clients, each starting its next task when the last one ended.

Stdlib only: the peer children import this, and spawn/forkserver children import them again.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any


class _Tickets:
    """Hands out at most ``tasks`` tickets, and none once ``max_s`` have passed since the first."""

    def __init__(self, tasks: int, max_s: float) -> None:
        self._numbers = itertools.count()
        self._tasks = tasks
        self._deadline = time.perf_counter() + max_s

    def take(self) -> bool:
        return next(self._numbers) < self._tasks and time.perf_counter() < self._deadline


def threaded(
    run_one: Callable[[], None], tasks: int, concurrency: int, max_s: float = math.inf
) -> dict[str, Any]:
    """Up to ``tasks`` calls of ``run_one`` from ``concurrency`` threads, none started after ``max_s``;
    each call's latency in s. The time cap keeps the slowest peers within the suite's time."""
    tickets = _Tickets(tasks, max_s)
    latencies_s: list[float] = []
    errors: list[str] = []

    def client() -> None:
        while tickets.take():
            started = time.perf_counter()
            try:
                run_one()
            except Exception as exc:  # counted, not fatal: a peer that fails is a finding
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies_s.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies_s": latencies_s, "wall_s": time.perf_counter() - started, "errors": errors[:20]}


async def gathered(
    run_one: Callable[[], Awaitable[None]], tasks: int, concurrency: int, max_s: float = math.inf
) -> dict[str, Any]:
    """The same with ``concurrency`` coroutines on one event loop."""
    tickets = _Tickets(tasks, max_s)
    latencies_s: list[float] = []
    errors: list[str] = []

    async def client() -> None:
        while tickets.take():
            started = time.perf_counter()
            try:
                await run_one()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies_s.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"latencies_s": latencies_s, "wall_s": time.perf_counter() - started, "errors": errors[:20]}
