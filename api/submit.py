"""Submitting a task from a route: with or without files, optionally waiting for the result."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from api.config import ApiSettings
from api.schemas import TaskPublic
from api.uploads import check_image, new_task_id, save_uploads
from supervisor.core import Submission, Supervisor
from supervisor.states import FINAL
from supervisor.store import TaskRow


async def submit_with_files(
    supervisor: Supervisor,
    settings: ApiSettings,
    submission: Submission,
    files: Sequence[UploadFile],
    images_only: bool = False,
) -> TaskRow:
    """Spool the files under the new task's id, then queue it; a refusal removes the files again."""
    supervisor.kind(submission.kind)  # refuse an unknown kind before writing anything
    task_id = new_task_id()
    spool = supervisor.spool_dir() / task_id
    names = await save_uploads(files, spool, settings.max_upload_mb)
    try:
        if images_only:
            for name in names:
                check_image(spool / name, settings.max_image_pixels)
        payload = dict(submission.payload)
        if len(names) == 1:
            payload.setdefault("file", names[0])
        row = await supervisor.submit(replace(submission, payload=payload, task_id=task_id), files_dir=spool)
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise
    if row.id != task_id:  # an Idempotency-Key named an earlier task: these copies are not needed
        shutil.rmtree(spool, ignore_errors=True)
    return row


async def answer(supervisor: Supervisor, settings: ApiSettings, row: TaskRow, wait_s: float) -> JSONResponse:
    """202 with the queued task, or, when asked to wait and it finished in time, 200 with the result."""
    if wait_s > 0:
        row = await supervisor.wait(row.id, min(wait_s, settings.max_wait_s))
    status = 200 if row.state in FINAL else 202
    body: dict[str, Any] = TaskPublic.of(row).model_dump(mode="json")
    return JSONResponse(body, status_code=status)
