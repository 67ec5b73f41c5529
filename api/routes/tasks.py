"""Tasks: submit (JSON or with files), get (optionally waiting), list, cancel, live events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, UploadFile, status
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from api.auth import require_user
from api.deps import ApiSettingsDep, SupervisorDep
from api.errors import MemvisorRoute
from api.schemas import TaskCreate, TaskList, TaskPublic
from api.submit import answer, submit_with_files
from supervisor.core import Submission, Supervisor
from supervisor.errors import InvalidRequestError
from supervisor.states import State

router = APIRouter(
    route_class=MemvisorRoute, prefix="/v1/tasks", tags=["tasks"], dependencies=[Depends(require_user)]
)
TaskId = Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
WaitS = Annotated[float, Query(ge=0, le=3600, description="hold the request until the task is final")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="a repeated key returns the task the first request created, instead of a new one",
    ),
]

REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Credentials required or invalid"},
    404: {"description": "No such task"},
    409: {"description": "The task is already final"},
    413: {"description": "Body, upload or image too large"},
    415: {"description": "Not a readable image"},
    422: {"description": "Unknown kind, invalid payload, or too big for the memory budget"},
    429: {"description": "The queue is full; see Retry-After"},
    503: {"description": "Kind disabled, service draining, or database unavailable"},
    507: {"description": "No space left for uploads"},
}


FINAL_IN_TIME: dict[int | str, dict[str, Any]] = {
    200: {"model": TaskPublic, "description": "Asked to wait, and the task was final in time"}
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**REFUSALS, **FINAL_IN_TIME},
    response_model=TaskPublic,
    summary="Submit a task; with wait_s, one request from submission to result",
)
async def submit(
    body: TaskCreate,
    supervisor: SupervisorDep,
    settings: ApiSettingsDep,
    wait_s: WaitS = 0,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    submission = Submission(
        body.kind, body.payload, body.timeout_s, body.ceiling_mb, idempotency_key=idempotency_key
    )
    row = await supervisor.submit(submission)
    return await answer(supervisor, settings, row, wait_s)


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**REFUSALS, **FINAL_IN_TIME},
    response_model=TaskPublic,
    summary="Submit a task with files; a single file is passed to the kind as payload.file",
)
async def submit_files(
    *,
    supervisor: SupervisorDep,
    settings: ApiSettingsDep,
    kind: Annotated[str, Form(min_length=1, max_length=200)],
    files: Annotated[list[UploadFile], File(description="saved in the task's spool directory")],
    payload: Annotated[str, Form(max_length=1_000_000, description="the payload as JSON")] = "{}",
    timeout_s: Annotated[float | None, Form(gt=0)] = None,
    ceiling_mb: Annotated[float | None, Form(gt=0)] = None,
    wait_s: WaitS = 0,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    submission = Submission(
        kind, _json_object(payload), timeout_s, ceiling_mb, idempotency_key=idempotency_key
    )
    row = await submit_with_files(supervisor, settings, submission, files)
    return await answer(supervisor, settings, row, wait_s)


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
    rows = await supervisor.list_tasks(
        state=state, kind=kind, since=since, until=until, limit=limit, offset=offset
    )
    return TaskList(items=[TaskPublic.of(r) for r in rows], limit=limit, offset=offset)


@router.get("/{task_id}", responses=REFUSALS, summary="Get a task; wait_s holds until it is final")
async def get_task(
    task_id: TaskId, supervisor: SupervisorDep, settings: ApiSettingsDep, *, wait_s: WaitS = 0
) -> TaskPublic:
    if wait_s > 0:
        row = await supervisor.wait(task_id, min(wait_s, settings.max_wait_s))
    else:
        row = await supervisor.get(task_id)
    return TaskPublic.of(row)


@router.delete("/{task_id}", responses=REFUSALS, summary="Cancel a queued or running task")
async def cancel(task_id: TaskId, supervisor: SupervisorDep) -> TaskPublic:
    return TaskPublic.of(await supervisor.cancel(task_id))


@router.get(
    "/{task_id}/events",
    responses={**REFUSALS, 200: {"content": {"text/event-stream": {}}}},
    summary="Server-sent events: `state` (the whole task) on every change, `progress` from the worker",
)
async def events(task_id: TaskId, supervisor: SupervisorDep, settings: ApiSettingsDep) -> EventSourceResponse:
    await supervisor.get(task_id)  # a 404 before the stream starts
    return EventSourceResponse(_stream(supervisor, task_id), ping=int(settings.sse_ping_s))


async def _stream(supervisor: Supervisor, task_id: str) -> AsyncIterator[dict[str, str]]:
    """The task as it is now, then every change; the stream ends after the final state."""
    async for event, value in supervisor.watch(task_id):
        if event == "progress":
            yield {"event": "progress", "data": json.dumps(value)}
        else:
            yield {"event": "state", "data": TaskPublic.of(value).model_dump_json()}


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("payload must be a JSON object")
    return value
