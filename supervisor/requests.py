"""What a caller asks of the supervisor about one task: submit it (validated, idempotent, refused
clearly when it could never fit any live instance), cancel it, and read its output files, wherever it
ran."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import outputs
from supervisor.errors import (
    AdmissionRefusedError,
    DrainingError,
    IdempotencyConflictError,
    NotCancellableError,
    OutputNotFoundError,
    QueueFullError,
    StoreUnavailableError,
)
from supervisor.schema import utcnow
from supervisor.states import Reason, State
from supervisor.store import TaskRow

if TYPE_CHECKING:
    from supervisor.core import Supervisor


@dataclass(frozen=True)
class Submission:
    kind: str
    payload: dict[str, Any]
    timeout_s: float | None = None
    ceiling_mb: float | None = None
    task_id: str | None = None  # chosen by the caller when files were spooled under it first
    idempotency_key: str | None = None  # a repeated key returns the task it first created


async def submit(sup: Supervisor, sub: Submission, files_dir: Path | None) -> TaskRow:
    """Validate, check that the task can fit some live instance, and queue it in the database.
    Raises on any refusal. ``files_dir``: its files go with the task (into the database on
    PostgreSQL, after which the local copy goes)."""
    if sup.draining:
        raise DrainingError("the service is draining and admits no new task")
    spec = sup.catalog.resolve(sub.kind)
    payload = spec.input_model.model_validate(sub.payload).model_dump(mode="json")
    key = sub.idempotency_key
    if key and (earlier := await _earlier(sup, key, spec.name, payload)):
        return earlier
    timeout_s = sup.limits.timeout(sub.timeout_s, spec.timeout_s)
    own_mb = sup.admission.budget().budget_mb if sup.runs_tasks else None
    largest_mb = sup.instances.largest_budget_mb(own_mb)
    ceiling_mb = sup.limits.ceiling(sub.ceiling_mb, sup.admission.ceiling_mb(spec), largest_mb)
    need_mb = sup.admission.need_mb(spec, ceiling_mb)
    if largest_mb is not None and need_mb > largest_mb:
        raise AdmissionRefusedError(spec.name, need_mb, largest_mb)
    row = TaskRow(
        id=sub.task_id or uuid.uuid4().hex,
        kind=spec.name,
        payload=payload,
        timeout_s=timeout_s,
        ceiling_mb=ceiling_mb,
        estimate_mb=need_mb,
        retriable=spec.retriable,
        max_attempts=sup.settings.max_attempts if spec.retriable else 1,
        idempotency_key=key,
    )
    try:
        inserted = await sup.db.run(sup.store.insert, row, files_dir, sup.settings.max_queue)
    except StoreUnavailableError:
        # Another submit with this key (here or on another instance) inserted first: the unique
        # index refused ours; answer with its task. Anything else was a real failure.
        if key and (earlier := await _earlier(sup, key, row.kind, row.payload)):
            return earlier
        raise
    if inserted is None:
        running = max(1, len(sup.sessions.running))
        raise QueueFullError(sup.settings.max_queue, max(1, min(60, sup.settings.max_queue // running)))
    if files_dir is not None and sup.db.postgres:
        shutil.rmtree(files_dir, ignore_errors=True)  # the database holds them now
    sup.publish(row.id, State.QUEUED)
    sup.claim_soon()
    return row


async def _earlier(sup: Supervisor, key: str, kind: str, payload: dict[str, Any]) -> TaskRow | None:
    """The task an earlier submit with this Idempotency-Key created, if it asked for the same work."""
    row = await sup.db.run(sup.store.by_idempotency_key, key)
    if row is None:
        return None
    if row.kind != kind or row.payload != payload:
        raise IdempotencyConflictError(key, row.id)
    return row


async def cancel(sup: Supervisor, task_id: str) -> TaskRow:
    """Cancel a task running here (its worker is stopped), queued (it ends before it runs, and its
    files go), or running on another instance (its owner hears and cancels it)."""
    row = await sup.get(task_id)
    worker = sup.sessions.worker_of(task_id)
    if worker is not None:
        worker.terminate(Reason.CANCELLED)
        return row
    if row.state == State.QUEUED:
        fields = {"reason": Reason.CANCELLED, "finished_at": utcnow()}
        if await sup.db.run(sup.store.transition, task_id, State.CANCELLED, State.QUEUED, **fields):
            sup.publish(task_id, State.CANCELLED, reason=Reason.CANCELLED)
            sup.outcomes.drop_files(task_id)
            return await sup.get(task_id)
    # Running on another instance (or claimed meanwhile): its owner hears and cancels it.
    if await sup.db.run(sup.store.request_cancel, task_id):
        return await sup.get(task_id)
    raise NotCancellableError(task_id, (await sup.get(task_id)).state)


async def output(sup: Supervisor, task_id: str, name: str) -> tuple[dict[str, Any], Path | None]:
    """One of a task's output files as its result lists it, and where it is on this instance's disk
    (None: in the database, read with ``output_chunks``); OutputNotFoundError if neither."""
    row = await sup.get(task_id)
    root = sup.outputs_dir()
    listed = outputs.listed_file(root, task_id, name, row.result)
    if listed is not None:
        return listed, outputs.task_dir(root, task_id) / listed["name"]
    named = outputs.named_in(row.result, name)
    if named is None or not sup.db.postgres:
        raise OutputNotFoundError(task_id, name)
    if await sup.db.run(sup.store.output_chunk, task_id, name, 0) is None:
        raise OutputNotFoundError(task_id, name)  # past its retention
    return named, None


async def output_chunks(sup: Supervisor, task_id: str, name: str) -> AsyncIterator[bytes]:
    seq = 0
    while (chunk := await sup.db.run(sup.store.output_chunk, task_id, name, seq)) is not None:
        yield chunk
        seq += 1
