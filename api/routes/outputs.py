"""A task's output files: ``GET /v1/tasks/{id}/files/{name}``, with the task routes' credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse, Response, StreamingResponse

from api.auth import require_user
from api.deps import SupervisorDep
from api.errors import MemvisorRoute
from api.routes.tasks import REFUSALS, TaskId

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
async def get_file(task_id: TaskId, name: FileName, supervisor: SupervisorDep) -> Response:
    listed, path = await supervisor.output(task_id, name)
    if path is not None:
        return FileResponse(
            path,
            media_type=listed["media_type"],
            filename=listed["name"],
            content_disposition_type="attachment",
        )
    # Held by the database (another instance ran the task): streamed a chunk at a time.
    headers = {
        "content-disposition": f'attachment; filename="{listed["name"]}"',
        "content-length": str(listed["size_bytes"]),
    }
    return StreamingResponse(
        supervisor.output_chunks(task_id, listed["name"]), media_type=listed["media_type"], headers=headers
    )
