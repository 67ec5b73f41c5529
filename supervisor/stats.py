"""Figures about past tasks, computed from the store on demand."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from supervisor.states import State
from supervisor.store import Store

RECENT_TASKS = 2000
QUANTILES = {"p50": 49, "p95": 94, "p99": 98}  # indexes into statistics.quantiles(n=100)


def task_stats(store: Store) -> dict[str, Any]:
    """Counts by kind and outcome, kills by reason, and wait/run percentiles of recent tasks."""
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    kills: Counter[str] = Counter()
    for kind, state, reason, n in store.counts():
        by_kind[kind][state] += n
        if state in (State.KILLED, State.TIMED_OUT) and reason:
            kills[reason] += n
    durations = store.durations(RECENT_TASKS)
    waits = [w for w, _ in durations if w is not None]
    runs = [r for _, r in durations if r is not None]
    return {
        "tasks_by_kind": {kind: dict(states) for kind, states in sorted(by_kind.items())},
        "kills_by_reason": dict(kills),
        "queue_wait_s": percentiles(waits),
        "run_s": percentiles(runs),
        "sample_size": len(durations),
    }


def percentiles(values: list[float]) -> dict[str, float | None]:
    if len(values) < 2:
        only = round(values[0], 4) if values else None
        return {name: only for name in QUANTILES}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {name: round(cuts[index], 4) for name, index in QUANTILES.items()}
