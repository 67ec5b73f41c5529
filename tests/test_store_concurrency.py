"""Concurrent writers never lose a transition, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from supervisor.states import State
from supervisor.store import Store, TaskRow

TASKS = 40
WRITERS = 8
FINALS = [State.SUCCEEDED, State.FAILED, State.KILLED, State.CANCELLED]


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> Iterator[Store]:
    store = Store(database_url or f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield store
    store.close()


def test_racing_writers_each_move_a_task_exactly_once(store: Store) -> None:
    ids = [store.insert(TaskRow(kind="k", timeout_s=1, ceiling_mb=1, estimate_mb=1)).id for _ in range(TASKS)]

    def start(writer: int) -> list[str]:
        return [task_id for task_id in ids if store.transition(task_id, State.RUNNING, src=State.QUEUED)]

    def finish(writer: int) -> list[tuple[str, State]]:
        final = FINALS[writer % len(FINALS)]
        return [(task_id, final) for task_id in ids if store.transition(task_id, final, src=State.RUNNING)]

    with ThreadPoolExecutor(WRITERS) as pool:
        started = [task_id for won in pool.map(start, range(WRITERS)) for task_id in won]
        finished = [pair for won in pool.map(finish, range(WRITERS)) for pair in won]
    assert sorted(started) == sorted(ids), "every task started exactly once"
    assert sorted(task_id for task_id, _ in finished) == sorted(ids), "every task finished exactly once"
    for task_id, final in finished:
        row = store.get(task_id)
        assert row is not None and row.state == final, "the winner's state is the one stored"
    assert sum(Counter(f for _, f in finished).values()) == TASKS
