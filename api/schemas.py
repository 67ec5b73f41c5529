"""Request and response models of the task routes (the contract in docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from supervisor.store import TaskRow, as_utc


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=200)
    payload: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    ceiling_mb: float | None = Field(default=None, gt=0)


class ErrorInfo(BaseModel):
    type: str
    message: str


class TaskPublic(BaseModel):
    id: str
    kind: str
    state: str
    result: dict[str, Any] | None
    error: ErrorInfo | None
    reason: str | None
    peak_rss_mb: float | None
    ceiling_mb: float
    estimate_mb: float
    exit_code: int | None
    signal: int | None
    attempts: int
    worker_pid: int | None
    timeout_s: float
    queue_wait_s: float | None
    run_s: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: TaskRow) -> TaskPublic:
        error = None
        if row.error_type or row.error_message:
            error = ErrorInfo(type=row.error_type or "Error", message=row.error_message or "")
        return cls(
            id=row.id,
            kind=row.kind,
            state=row.state,
            result=row.result,
            error=error,
            reason=row.reason,
            peak_rss_mb=row.peak_rss_mb,
            ceiling_mb=row.ceiling_mb,
            estimate_mb=row.estimate_mb,
            exit_code=row.exit_code,
            signal=row.signal,
            attempts=row.attempts,
            worker_pid=row.worker_pid,
            timeout_s=row.timeout_s,
            queue_wait_s=row.queue_wait_s,
            run_s=row.run_s,
            created_at=as_utc(row.created_at),
            started_at=as_utc(row.started_at),
            finished_at=as_utc(row.finished_at),
        )


class TaskList(BaseModel):
    items: list[TaskPublic]
    limit: int
    offset: int
