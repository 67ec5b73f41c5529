"""Tasks: submit, get (optionally waiting), list, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from api.deps import ApiSettingsDep, SupervisorDep
from api.schemas import TaskCreate, TaskList, TaskPublic
from supervisor.core import Submission
from supervisor.states import State

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])
TaskId = Annotated[str, Path(max_length=64)]

REFUSALS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such task"},
    409: {"description": "The task is already final"},
    422: {"description": "Unknown kind, invalid payload, or too big for the memory budget"},
    429: {"description": "The queue is full; see Retry-After"},
    503: {"description": "Kind disabled, service draining, or database unavailable"},
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=REFUSALS, summary="Submit a task")
async def submit(body: TaskCreate, supervisor: SupervisorDep) -> TaskPublic:
    row = supervisor.submit(Submission(body.kind, body.payload, body.timeout_s, body.ceiling_mb))
    return TaskPublic.of(row)


@router.get("", summary="List tasks, newest first")
async def list_tasks(
    supervisor: SupervisorDep,
    *,
    state: State | None = None,
    kind: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> TaskList:
    rows = supervisor.store.search(
        state=state, kind=kind, since=since, until=until, limit=limit, offset=offset
    )
    return TaskList(items=[TaskPublic.of(r) for r in rows], limit=limit, offset=offset)


@router.get("/{task_id}", responses=REFUSALS, summary="Get a task; wait_s holds until it is final")
async def get_task(
    task_id: TaskId,
    *,
    supervisor: SupervisorDep,
    settings: ApiSettingsDep,
    wait_s: Annotated[float, Query(ge=0)] = 0,
) -> TaskPublic:
    if wait_s > 0:
        row = await supervisor.wait(task_id, min(wait_s, settings.max_wait_s))
    else:
        row = supervisor.get(task_id)
    return TaskPublic.of(row)


@router.delete("/{task_id}", responses=REFUSALS, summary="Cancel a queued or running task")
async def cancel(task_id: TaskId, supervisor: SupervisorDep) -> TaskPublic:
    return TaskPublic.of(supervisor.cancel(task_id))
