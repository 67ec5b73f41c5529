"""Rescue and retention: what any instance does for the dead and the old, with no leader.

A task left ``running`` by a dead instance (see supervisor/instances.py) is requeued if its kind is
retriable and attempts remain, else failed as ``interrupted``. Its rows are taken with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (``BEGIN IMMEDIATE`` on SQLite): two rescuers never both
move one task, and a row another transaction holds (a live claim, an outcome being written) is left
for the next round rather than re-checked against a list of live instances read earlier. A boot only
ever touches the tasks of dead instances: a live peer's row is fresh, and its process alive.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, delete, false, or_, update
from sqlalchemy.engine import Connection
from sqlmodel import col, select

from supervisor.database import Database
from supervisor.instances import Process, db_now, is_dead, read_instances
from supervisor.schema import InstanceRow, TaskFileRow, TaskOutputRow, TaskRow
from supervisor.states import FINAL, Reason, State

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = "the instance running it stopped (its heartbeat ended or its process is gone)"
PURGE_BATCH = 500


@dataclass
class Rescued:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    dead_instances: list[str] = field(default_factory=list)


def rescue(db: Database, me: str, here: Process, dead_after_s: float) -> Rescued:
    def work() -> Rescued:
        with db.transaction(immediate=True) as conn:
            now = db_now(db, conn)
            dead = [
                row.id
                for row in read_instances(conn)
                if row.id != me and is_dead(row, now, dead_after_s, here)
            ]
            orphaned = _orphaned(dead)
            retry = and_(col(TaskRow.retriable), col(TaskRow.attempts) < col(TaskRow.max_attempts))
            done = Rescued(dead_instances=dead)
            # A cancel asked before its owner died is honoured, never undone by a requeue.
            done.cancelled = _move(
                db, conn, and_(orphaned, col(TaskRow.cancel_requested)),
                state=State.CANCELLED, reason=Reason.CANCELLED, finished_at=now,
            )  # fmt: skip
            done.requeued = _move(
                db, conn, and_(orphaned, retry), state=State.QUEUED, owner_id=None, reason=Reason.INTERRUPTED
            )
            done.failed = _move(
                db,
                conn,
                orphaned,
                state=State.FAILED,
                reason=Reason.INTERRUPTED,
                error_type="Interrupted",
                error_message=INTERRUPTED_MESSAGE,
                finished_at=now,
            )
            ended = done.failed + done.cancelled
            if ended and db.postgres:
                conn.execute(delete(TaskFileRow).where(col(TaskFileRow.task_id).in_(ended)))
            if dead:
                conn.execute(delete(InstanceRow).where(col(InstanceRow.id).in_(dead)))
            return done

    done = db.guard(work)
    for task_id in done.requeued:
        log.warning("task %s: its instance is dead; requeued", task_id)
    for task_id in done.failed:
        log.warning("task %s: its instance is dead; failed (interrupted)", task_id)
    for task_id in done.cancelled:
        log.warning("task %s: its instance is dead; cancelled, as asked", task_id)
    return done


def _orphaned(dead: list[str]) -> ColumnElement[bool]:
    """Running, and owned by nobody (the first release wrote no owner), by a dead instance, or by an
    instance whose row is gone. A live instance's row exists before it claims anything."""
    registered = select(InstanceRow.id)
    return and_(
        col(TaskRow.state) == State.RUNNING,
        or_(
            col(TaskRow.owner_id).is_(None),
            col(TaskRow.owner_id).in_(dead) if dead else false(),
            col(TaskRow.owner_id).not_in(registered),
        ),
    )


def _move(db: Database, conn: Connection, where: ColumnElement[bool], **values: object) -> list[str]:
    chosen = select(TaskRow.id).where(where)
    if db.postgres:
        chosen = chosen.with_for_update(skip_locked=True)
    ids = [row[0] for row in conn.execute(chosen).all()]
    if ids:
        conn.execute(update(TaskRow).where(col(TaskRow.id).in_(ids), where).values(**values))
    return ids


def purge(
    db: Database, retention_s: float, output_retention_s: float | None = None, batch: int = PURGE_BATCH
) -> int:
    """Delete tasks final for longer than ``retention_s`` (and any file of theirs), a batch per
    transaction until a batch comes back short, and the stored outputs of tasks final for longer than
    ``output_retention_s``. Short transactions keep claims and outcome writes flowing meanwhile."""
    total = 0
    while (deleted := db.guard(lambda: _purge_batch(db, retention_s, batch))) > 0:
        total += deleted
        if deleted < batch:
            break
    if output_retention_s is not None and db.postgres:
        db.guard(lambda: _purge_outputs(db, output_retention_s))
    return total


def _purge_batch(db: Database, retention_s: float, batch: int) -> int:
    with db.transaction(immediate=True) as conn:
        cutoff = db_now(db, conn) - timedelta(seconds=retention_s)
        old = (
            select(TaskRow.id)
            .where(col(TaskRow.state).in_(sorted(FINAL)), col(TaskRow.finished_at) < cutoff)
            .limit(batch)
        )
        ids = [row[0] for row in conn.execute(old).all()]
        if ids:
            conn.execute(delete(TaskFileRow).where(col(TaskFileRow.task_id).in_(ids)))
            conn.execute(delete(TaskOutputRow).where(col(TaskOutputRow.task_id).in_(ids)))
            conn.execute(delete(TaskRow).where(col(TaskRow.id).in_(ids)))
        return len(ids)


def _purge_outputs(db: Database, output_retention_s: float) -> None:
    with db.transaction(immediate=True) as conn:
        stale = db_now(db, conn) - timedelta(seconds=output_retention_s)
        done = select(TaskRow.id).where(col(TaskRow.finished_at) < stale).scalar_subquery()
        conn.execute(delete(TaskOutputRow).where(col(TaskOutputRow.task_id).in_(done)))
