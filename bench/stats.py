"""Measuring on a noisy machine: closed-loop drivers, percentiles, medians over repeats with their
spread, ratios, and how report.md writes them.

Stdlib only: the peers' children import this, and spawn/forkserver children import them again.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

ERROR_SAMPLES = 20


class _Loop:
    """Hands out at most ``tasks`` tickets, none once ``max_s`` have passed; records each latency."""

    def __init__(self, tasks: int, max_s: float) -> None:
        self._numbers = itertools.count()
        self._tasks = tasks
        self._deadline = time.perf_counter() + max_s
        self.started = time.perf_counter()
        self.latencies_s: list[float] = []
        self.errors: list[str] = []

    def take(self) -> float | None:
        """The start time of the next task, or None when the loop is over."""
        if next(self._numbers) < self._tasks and time.perf_counter() < self._deadline:
            return time.perf_counter()
        return None

    def done(self, started: float, exc: Exception | None) -> None:
        if exc is None:
            self.latencies_s.append(time.perf_counter() - started)
        else:  # counted, not fatal: a peer that fails is a finding
            self.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def result(self) -> dict[str, Any]:
        wall_s = time.perf_counter() - self.started
        return {"latencies_s": self.latencies_s, "wall_s": wall_s, "errors": self.errors[:ERROR_SAMPLES]}


def threaded(
    run_one: Callable[[], None], tasks: int, concurrency: int, max_s: float = math.inf
) -> dict[str, Any]:
    """Up to ``tasks`` calls of ``run_one`` from ``concurrency`` threads, each starting its next call
    when the last one ended, none started after ``max_s`` (which keeps the slowest peers within the
    suite's time); each call's latency in s."""
    loop = _Loop(tasks, max_s)

    def client() -> None:
        while (started := loop.take()) is not None:
            try:
                run_one()
            except Exception as exc:
                loop.done(started, exc)
            else:
                loop.done(started, None)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return loop.result()


async def gathered(
    run_one: Callable[[], Awaitable[None]], tasks: int, concurrency: int, max_s: float = math.inf
) -> dict[str, Any]:
    """The same with ``concurrency`` coroutines on one event loop."""
    loop = _Loop(tasks, max_s)

    async def client() -> None:
        while (started := loop.take()) is not None:
            try:
                await run_one()
            except Exception as exc:
                loop.done(started, exc)
            else:
                loop.done(started, None)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return loop.result()


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of the values that were measured (None ones are left out)."""
    known = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not known:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(known), "median": statistics.median(known), "min": min(known), "max": max(known)}


def latency_summary(latencies_s: Sequence[float], wall_s: float) -> dict[str, float]:
    """One run of a closed loop: latency percentiles in ms and completed tasks per second."""
    return {
        "tasks": len(latencies_s),
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p95_ms": percentile(latencies_s, 95) * 1000,
        "p99_ms": percentile(latencies_s, 99) * 1000,
        "tasks_per_s": len(latencies_s) / wall_s if wall_s > 0 else math.nan,
    }


def over_repeats(runs: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """For each key, the spread of its value over the repeats."""
    return {key: spread(run.get(key) for run in runs) for key in keys}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def median(spread_or_value: Any) -> float | None:
    if isinstance(spread_or_value, dict):
        value: float | None = spread_or_value.get("median")
        return value
    return None if spread_or_value is None else float(spread_or_value)


def fmt(value: Any, digits: int = 1) -> str:
    """One figure as report.md writes it: a spread as ``median [min-max]``, a count of outcomes as
    ``a x3, b x1``, a float to ``digits`` places, a missing one as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, dict) and "median" in value:
        return _spread_text(value, digits)
    if isinstance(value, dict):
        return ", ".join(f"{key} x{count}" for key, count in sorted(value.items()))
    return str(value)


def _spread_text(value: dict[str, Any], digits: int) -> str:
    if value["median"] is None:
        return "-"
    text = fmt(float(value["median"]), digits)
    if value["n"] > 1:
        text += f" [{fmt(float(value['min']), digits)}-{fmt(float(value['max']), digits)}]"
    return text


def times(value: float | None) -> str:
    """A ratio: ``x2.81``, or ``x13`` from 10 up."""
    if value is None:
        return "-"
    return f"x{value:.2f}" if value < 10 else f"x{value:.0f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def aim(scenario: str, figure: str, target: str, met: bool | None) -> dict[str, Any]:
    """One row of the report's headline."""
    return {"scenario": scenario, "figure": figure, "aim": target, "met": met}
