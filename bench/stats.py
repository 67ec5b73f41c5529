"""Small statistics for a noisy machine: percentiles, medians over repeats with their spread, ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min, max and quartiles of the values that were measured (None ones are left out)."""
    known = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not known:
        return {"n": 0, "median": None, "min": None, "max": None, "q1": None, "q3": None}
    return {
        "n": len(known),
        "median": statistics.median(known),
        "min": min(known),
        "max": max(known),
        "q1": percentile(known, 25),
        "q3": percentile(known, 75),
    }


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
