"""The queue's decisions against a real database (SQLite and PostgreSQL): memory-aware claims,
racing claimers, owner-guarded writes, rescue of dead instances only; and their pure rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.admission import Admission, plan
from supervisor.database import Database
from supervisor.instances import Instances, Process, is_dead
from supervisor.outcomes import Outcomes
from supervisor.queue import Room, claim
from supervisor.rescue import purge, rescue
from supervisor.schema import InstanceRow
from supervisor.states import Reason, State
from supervisor.store import Store, TaskRow
from supervisor.verdict import Verdict

REPORT = {"limit_mb": 512.0, "budget_mb": 400.0, "enforcement": "watchdog", "running": 0, "listening": False}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh database per test: what one test leaves queued would be claimed by the next."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    store = Store(Database(url))
    yield store
    store.close()


def _add(store: Store, kind: str = "k", ceiling_mb: float = 100, retriable: bool = True) -> str:
    row = TaskRow(
        kind=kind, timeout_s=1, ceiling_mb=ceiling_mb, estimate_mb=1, retriable=retriable, max_attempts=3
    )
    assert store.insert(row) is not None
    return row.id


def _room(free_mb: float, slots: int = 16, largest_mb: float | None = None) -> Room:
    return Room(committed_mb=0, budget_mb=free_mb, slots=slots, largest_budget_mb=largest_mb)


def test_claim_takes_what_fits_the_free_budget_and_leaves_the_rest(store: Store) -> None:
    ids = [_add(store) for _ in range(4)]
    got = claim(store.db, "me", lambda kind, ceiling: 40.0, _room(100))
    assert [r.id for r in got.started] == ids[:2], "oldest first, as many as fit 100 MB"
    assert all(r.state == State.RUNNING and r.owner_id == "me" and r.attempts == 1 for r in got.started)
    assert [r.id for r in store.in_state(State.QUEUED)] == ids[2:]


def test_a_task_too_big_here_is_left_to_a_larger_peer_and_one_too_big_everywhere_refused(
    store: Store,
) -> None:
    big, huge, small = _add(store, "big"), _add(store, "huge"), _add(store)
    needs = {"big": 300.0, "huge": 900.0, "k": 40.0}
    got = claim(store.db, "me", lambda kind, ceiling: needs[kind], _room(200, largest_mb=500))
    assert [r.id for r in got.started] == [small]
    assert [task_id for task_id, _ in got.refused] == [huge]
    refused = store.get(huge)
    assert refused is not None and (refused.state, refused.reason) == (
        State.FAILED,
        Reason.TOO_BIG_FOR_BUDGET,
    )
    assert "900 MB" in (refused.error_message or "") and "500 MB" in (refused.error_message or "")
    assert [r.id for r in store.in_state(State.QUEUED)] == [big], "waits for the larger peer"


def test_racing_claimers_take_each_task_once(store: Store) -> None:
    ids = [_add(store) for _ in range(60)]
    others = [Database(store.db.url, migrate=False) for _ in range(3)]

    def claimer(index: int) -> list[str]:
        db, taken = others[index], []
        while True:
            got = claim(db, f"c{index}", lambda kind, ceiling: 1.0, _room(1000, slots=4))
            if not got.started and not store.in_state(State.QUEUED):
                return taken
            taken += [r.id for r in got.started]

    try:
        with ThreadPoolExecutor(3) as pool:
            taken = [task_id for won in pool.map(claimer, range(3)) for task_id in won]
    finally:
        for db in others:
            db.close()
    assert Counter(taken) == Counter(ids), "every task claimed exactly once"


def test_an_outcome_for_a_task_taken_away_is_dropped(store: Store) -> None:
    task_id = _add(store)
    [_first] = claim(store.db, "old", lambda kind, ceiling: 1.0, _room(100)).started
    assert store.transition(task_id, State.QUEUED, src=State.RUNNING, owner="old", attempt=1, owner_id=None)
    [again] = claim(store.db, "new", lambda kind, ceiling: 1.0, _room(100)).started
    assert again.attempts == 2
    assert not store.transition(task_id, State.SUCCEEDED, src=State.RUNNING, owner="old", attempt=1)
    assert not store.transition(task_id, State.SUCCEEDED, src=State.RUNNING, owner="new", attempt=1)
    assert store.transition(task_id, State.SUCCEEDED, src=State.RUNNING, owner="new", attempt=2)


def _elsewhere(db: Database, stale_s: float) -> Instances:
    """An instance registered from another machine, its last beat ``stale_s`` ago."""
    peer = Instances(db, "all", 30)
    peer.process = Process("another-machine", 1, 1)
    peer.register(REPORT)
    moment = datetime.now(UTC) - timedelta(seconds=stale_s)
    with db.transaction() as conn:
        from sqlalchemy import update

        conn.execute(update(InstanceRow).where(InstanceRow.id == peer.id).values(heartbeat_at=moment))  # type: ignore[arg-type]
    return peer


def test_rescue_touches_only_the_tasks_of_dead_instances(store: Store) -> None:
    me = Instances(store.db, "all", 30)
    me.register(REPORT)
    live, dead = _elsewhere(store.db, 1), _elsewhere(store.db, 60)
    ids = {name: _add(store, retriable=name != "fragile") for name in ("live", "dead", "fragile")}
    for owner in (live.id, dead.id, dead.id):
        assert claim(store.db, owner, lambda kind, ceiling: 1.0, _room(100, slots=1)).started
    done = rescue(store.db, me.id, me.process, 30)
    assert (done.requeued, done.failed, done.dead_instances) == ([ids["dead"]], [ids["fragile"]], [dead.id])
    states = {name: store.get(task_id) for name, task_id in ids.items()}
    assert states["live"] is not None and states["live"].state == State.RUNNING
    assert states["dead"] is not None and (states["dead"].state, states["dead"].owner_id) == (
        State.QUEUED,
        None,
    )
    assert states["fragile"] is not None and states["fragile"].reason == Reason.INTERRUPTED
    assert rescue(store.db, me.id, me.process, 30).requeued == [], "a second rescuer finds nothing"


def test_retention_deletes_only_old_final_tasks(store: Store) -> None:
    old, recent, waiting = _add(store), _add(store), _add(store)
    long_ago = datetime.now(UTC) - timedelta(days=8)
    assert store.transition(old, State.CANCELLED, src=State.QUEUED, finished_at=long_ago)
    assert store.transition(recent, State.CANCELLED, src=State.QUEUED, finished_at=datetime.now(UTC))
    assert purge(store.db, 7 * 86400) == 1
    assert store.get(old) is None and store.get(recent) is not None and store.get(waiting) is not None


CRASHED = Verdict(State.FAILED, Reason.CRASHED, error_type="Crashed", error_message="exit code -9")


def test_a_retry_after_a_cancel_was_asked_ends_the_task_cancelled(store: Store, tmp_path: Path) -> None:
    task_id = _add(store)
    assert claim(store.db, "owner", lambda kind, ceiling: 1.0, _room(100)).started
    assert store.request_cancel(task_id), "asked through a peer while the task runs"
    published: list[tuple[str, State]] = []
    outcomes = Outcomes(
        store, "owner", cast(Admission, None),  # learning is not on this path
        spool_dir=tmp_path, publish=lambda task_id, state, **_: published.append((task_id, state)), history=8,
    )  # fmt: skip
    asyncio.run(outcomes.end(task_id, 1, CRASHED, retry=True, fields={}))
    row = store.get(task_id)
    assert row is not None and (row.state, row.reason) == (State.CANCELLED, Reason.CANCELLED)
    assert published == [(task_id, State.CANCELLED)]
    assert not claim(store.db, "peer", lambda kind, ceiling: 1.0, _room(100)).started, "never runs again"


def test_a_task_requeued_after_its_cancel_was_asked_is_cancelled_at_claim(store: Store) -> None:
    task_id, other = _add(store), _add(store)
    assert claim(store.db, "owner", lambda kind, ceiling: 1.0, _room(100, slots=1)).started
    assert store.request_cancel(task_id)
    # A requeue written in the instant the cancel landed, without seeing it.
    assert store.transition(task_id, State.QUEUED, src=State.RUNNING, owner="owner", attempt=1, owner_id=None)
    got = claim(store.db, "peer", lambda kind, ceiling: 1.0, _room(100))
    assert [r.id for r in got.started] == [other]
    assert [(i, v.state) for i, v in got.refused] == [(task_id, State.CANCELLED)]
    row = store.get(task_id)
    assert row is not None and (row.state, row.reason, row.attempts) == (State.CANCELLED, Reason.CANCELLED, 1)


def test_rescue_honours_a_cancel_asked_before_the_owner_died(store: Store) -> None:
    me = Instances(store.db, "all", 30)
    me.register(REPORT)
    dead = _elsewhere(store.db, 60)
    cancelled, plain = _add(store), _add(store)
    assert len(claim(store.db, dead.id, lambda kind, ceiling: 1.0, _room(100)).started) == 2
    assert store.request_cancel(cancelled)
    done = rescue(store.db, me.id, me.process, 30)
    assert (done.cancelled, done.requeued) == ([cancelled], [plain])
    row = store.get(cancelled)
    assert row is not None and (row.state, row.reason) == (State.CANCELLED, Reason.CANCELLED)
    assert row.finished_at is not None


def test_retention_keeps_deleting_until_a_batch_comes_back_short(store: Store) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=8)
    old = [_add(store) for _ in range(5)]
    for task_id in old:
        assert store.transition(task_id, State.CANCELLED, src=State.QUEUED, finished_at=long_ago)
    waiting = _add(store)
    assert purge(store.db, 7 * 86400, batch=2) == 5
    assert [store.get(task_id) for task_id in old] == [None] * 5 and store.get(waiting) is not None


# ----- pure rules ----------------------------------------------------------------------------------

HERE = Process("this-machine", 100, 5)
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _row(machine: str, pid: int, age_s: float) -> InstanceRow:
    return InstanceRow(
        id="x", role="all", host="h", machine=machine, pid=pid, pid_start=7,
        started_at=NOW, heartbeat_at=NOW - timedelta(seconds=age_s),
    )  # fmt: skip


@given(age_s=st.floats(0, 1000), dead_after_s=st.floats(1, 100), alive=st.booleans(), same=st.booleans())
def test_an_instance_is_dead_by_its_heartbeat_or_by_its_gone_process_here(
    age_s: float, dead_after_s: float, alive: bool, same: bool
) -> None:
    row = _row(HERE.machine if same else "elsewhere", 42, age_s)
    dead = is_dead(row, NOW, dead_after_s, HERE, alive=lambda pid, start: alive)
    if age_s > dead_after_s:
        assert dead
    else:  # a fresh heartbeat: dead only if, on this very machine, its process is gone
        assert dead == (same and not alive)


needs = st.lists(st.none() | st.floats(min_value=1, max_value=1000), max_size=30)


@given(needs=needs, budget=st.floats(0, 1000), largest=st.floats(0, 1000), slots=st.integers(0, 20))
@settings(max_examples=300)
def test_plan_leaves_to_peers_only_what_fits_a_peer(
    needs: list[float | None], budget: float, largest: float, slots: int
) -> None:
    decision = plan(needs, 0.0, budget, slots, largest)
    top = max(budget, largest)
    assert all(needs[p] is not None and budget < needs[p] <= top for p in decision.skip)  # type: ignore[operator]
    assert all(needs[p] is None or needs[p] > top for p in decision.refuse)  # type: ignore[operator]
    decided = sorted(decision.start + decision.refuse + decision.skip)
    assert decided == list(range(len(decided))), "only a prefix of the queue is decided"
    assert sum(needs[p] for p in decision.start) <= budget + 1e-9  # type: ignore[misc]
