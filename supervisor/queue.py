"""The queue lives in the database; each instance claims from it what fits its own memory now.

A claim is one transaction: the oldest queued tasks are locked (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so peers claiming at the same moment take different rows without waiting; ``BEGIN
IMMEDIATE`` on SQLite), ``admission.plan`` decides with this instance's free budget which of them
start here, and those become ``running``, owned by this instance, at attempt + 1. A task too big for
this instance but not for a live peer is left to the peer; one too big for every live instance is
refused. Wake-ups come by NOTIFY where the connection can LISTEN, and by a short poll everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, delete, update
from sqlalchemy import select as select_columns  # sqlmodel's select types at most four columns
from sqlmodel import col, select

from supervisor.admission import plan
from supervisor.database import Database
from supervisor.errors import AdmissionRefusedError
from supervisor.schema import TaskFileRow, TaskRow, as_utc, utcnow
from supervisor.states import Reason, State
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)

WINDOW_EXTRA = 32  # rows looked at beyond the free slots: tasks left to larger peers are skipped
NeedFn = Callable[[str, float], float | None]  # (kind, ceiling_mb) -> need, None if the kind is gone


@dataclass
class Claim:
    started: list[TaskRow] = field(default_factory=list)
    refused: list[tuple[str, Verdict]] = field(default_factory=list)


@dataclass(frozen=True)
class Room:
    """What this instance can take now."""

    committed_mb: float
    budget_mb: float
    slots: int
    largest_budget_mb: float | None  # of any live instance, for refusals


_START = (
    update(TaskRow)
    .where(col(TaskRow.id) == bindparam("b_id"), col(TaskRow.state) == State.QUEUED)
    .values(
        state=State.RUNNING,
        owner_id=bindparam("b_owner"),
        attempts=col(TaskRow.attempts) + 1,
        started_at=bindparam("b_started_at"),
        queue_wait_s=bindparam("b_queue_wait_s"),
        ceiling_mb=bindparam("b_ceiling_mb"),
        estimate_mb=bindparam("b_estimate_mb"),
        reason=None,
    )
)
HEAD_COLUMNS = (TaskRow.id, TaskRow.kind, TaskRow.ceiling_mb, TaskRow.created_at, TaskRow.cancel_requested)
CANCELLED_AT_CLAIM = Verdict(State.CANCELLED, Reason.CANCELLED)


def claim(db: Database, owner: str, need_of: NeedFn, room: Room) -> Claim:
    """One claiming transaction (blocking: call it through ``Database.run``)."""

    def work() -> Claim:
        window = max(room.slots, 0) + WINDOW_EXTRA
        with db.transaction(immediate=True) as conn:
            head = (
                select_columns(*(col(c) for c in HEAD_COLUMNS))
                .where(col(TaskRow.state) == State.QUEUED)
                .order_by(col(TaskRow.created_at), col(TaskRow.id))
                .limit(window)
            )
            if db.postgres:
                head = head.with_for_update(skip_locked=True)
            result = Claim()
            rows = []
            for row in conn.execute(head).all():
                # Requeued by a retry or a rescue that raced a cancel: the cancel stands.
                if row.cancel_requested and _fail_queued(db, conn, row.id, CANCELLED_AT_CLAIM):
                    result.refused.append((row.id, CANCELLED_AT_CLAIM))
                elif not row.cancel_requested:
                    rows.append(row)
            # With the ceiling each task will run under: never above this instance's budget.
            needs = [need_of(row.kind, _clip(row.ceiling_mb, room.budget_mb)) for row in rows]
            decision = plan(needs, room.committed_mb, room.budget_mb, room.slots, room.largest_budget_mb)
            now = utcnow()
            starts = [
                {
                    "b_id": rows[p].id,
                    "b_owner": owner,
                    "b_started_at": now,
                    "b_queue_wait_s": (now - (as_utc(rows[p].created_at) or now)).total_seconds(),
                    "b_ceiling_mb": _clip(rows[p].ceiling_mb, room.budget_mb),
                    "b_estimate_mb": needs[p],
                }
                for p in decision.start
            ]
            if starts:
                conn.execute(_START, starts)
            largest_mb = max(room.budget_mb, room.largest_budget_mb or 0.0)
            for p in decision.refuse:
                verdict = _refusal(rows[p].kind, needs[p], largest_mb)
                if _fail_queued(db, conn, rows[p].id, verdict):
                    result.refused.append((rows[p].id, verdict))
            if starts:
                ids = [s["b_id"] for s in starts]
                found = conn.execute(select(TaskRow).where(col(TaskRow.id).in_(ids))).all()
                by_id = {row.id: TaskRow.model_validate(dict(row._mapping)) for row in found}
                result.started = [by_id[i] for i in ids if i in by_id]
            return result

    return db.guard(work)


def _clip(ceiling_mb: float, budget_mb: float) -> float:
    return min(ceiling_mb, budget_mb) if budget_mb > 0 else ceiling_mb


def _refusal(kind: str, need_mb: float | None, largest_mb: float) -> Verdict:
    if need_mb is None:
        return Verdict(
            State.FAILED,
            Reason.ERROR,
            error_type="UnknownKind",
            error_message=f"kind {kind!r} is no longer registered",
        )
    return Verdict(
        State.FAILED,
        Reason.TOO_BIG_FOR_BUDGET,
        error_type="AdmissionRefused",
        error_message=str(AdmissionRefusedError(kind, need_mb, largest_mb)),
    )


def _fail_queued(db: Database, conn: object, task_id: str, verdict: Verdict) -> bool:
    stmt = (
        update(TaskRow)
        .where(col(TaskRow.id) == task_id, col(TaskRow.state) == State.QUEUED)
        .values(
            state=verdict.state,
            reason=verdict.reason,
            error_type=verdict.error_type,
            error_message=verdict.error_message,
            finished_at=utcnow(),
        )
    )
    moved = conn.execute(stmt).rowcount == 1  # type: ignore[attr-defined]
    if moved and db.postgres:
        conn.execute(delete(TaskFileRow).where(col(TaskFileRow.task_id) == task_id))  # type: ignore[attr-defined]
    return bool(moved)


class Host(Protocol):
    """What the claimer needs of the rest of the supervisor."""

    def room(self) -> Room | None: ...  # None: claim nothing now (draining, no zygote, no slot)

    def need_mb(self, kind: str, ceiling_mb: float) -> float | None: ...

    async def launch(self, row: TaskRow) -> None: ...

    def refused(self, task_id: str, verdict: Verdict) -> None: ...


class Claimer:
    """Claims whenever woken (a local submit, a NOTIFY, a worker's end) and at least every poll."""

    def __init__(self, db: Database, owner: str, host: Host, poll_s: float) -> None:
        self.db = db
        self.owner = owner
        self.host = host
        self.poll_s = poll_s
        self.wake = asyncio.Event()
        self.stopped = False
        self.ready: Callable[[], Awaitable[bool]] | None = None  # e.g. the zygote is up

    async def loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)
            self.wake.clear()
            if self.stopped:  # set by shutdown, which wakes us to see it
                return
            try:
                await self.claim_once()
            except Exception:  # e.g. the database went away: try again on the next wake-up
                log.exception("claim failed")

    async def claim_once(self) -> None:
        if self.ready is not None and not await self.ready():
            return
        room = self.host.room()
        if room is None:
            return
        claimed = await self.db.run(claim, self.db, self.owner, self.host.need_mb, room)
        for task_id, verdict in claimed.refused:
            self.host.refused(task_id, verdict)
        for row in claimed.started:
            await self.host.launch(row)
