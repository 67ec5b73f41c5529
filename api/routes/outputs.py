"""A task's output files: ``GET /v1/tasks/{id}/files/{name}``, with the task routes' credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse

from api.auth import require_user
from api.deps import SupervisorDep
from api.errors import MemvisorRoute
from api.routes.tasks import REFUSALS, TaskId
from supervisor import outputs
from supervisor.errors import OutputNotFoundError

router = APIRouter(
    route_class=MemvisorRoute, prefix="/v1/tasks", tags=["tasks"], dependencies=[Depends(require_user)]
)
FileName = Annotated[str, Path(max_length=128, description="a name listed in the task's result files")]


@router.get(
    "/{task_id}/files/{name}",
    responses={**REFUSALS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=FileResponse,
    summary="Download a file the task wrote (listed in its result's files, kept for OUTPUT_RETENTION_S)",
)
async def get_file(task_id: TaskId, name: FileName, supervisor: SupervisorDep) -> FileResponse:
    row = await supervisor.get(task_id)
    root = supervisor.outputs_dir()
    listed = outputs.listed_file(root, task_id, name, row.result)
    if listed is None:
        raise OutputNotFoundError(task_id, name)
    return FileResponse(
        outputs.task_dir(root, task_id) / listed["name"],
        media_type=listed["media_type"],
        filename=listed["name"],
        content_disposition_type="attachment",
    )
