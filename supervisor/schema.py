"""The tables. They are created and changed only by the migrations in ``supervisor/migrations``.

On PostgreSQL they live in the ``memvisor`` schema (Supabase exposes ``public`` through its REST
API); the models name no schema, and the engine maps it (``schema_translate_map``). SQLite has none.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary
from sqlmodel import Field, SQLModel

from supervisor.states import State

SCHEMA = "memvisor"
NOTIFY_CHANNEL = "memvisor"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; every timestamp we write is UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _timestamp(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=nullable)


class TaskRow(SQLModel, table=True):
    __tablename__ = "tasks"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True)
    kind: str = Field(index=True)
    state: str = Field(default=State.QUEUED, index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    error_type: str | None = None
    error_message: str | None = None
    reason: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    retriable: bool = False
    timeout_s: float
    ceiling_mb: float
    estimate_mb: float
    worker_pid: int | None = None
    exit_code: int | None = None
    signal: int | None = None
    peak_rss_mb: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True), index=True)
    started_at: datetime | None = _timestamp()
    finished_at: datetime | None = _timestamp()
    queue_wait_s: float | None = None
    run_s: float | None = None
    # The instance running the current attempt; every later write about the task names it and the
    # attempt, so that an instance whose task was taken away cannot overwrite the new owner's record.
    owner_id: str | None = Field(default=None, index=True)
    cancel_requested: bool = False  # asked through another instance than the owner
    has_files: bool = False  # its uploaded inputs are in task_files
    idempotency_key: str | None = Field(default=None, unique=True)  # for clients; unique when set


class KindStatRow(SQLModel, table=True):
    """Observed peaks of a kind, newest last; every instance learns its estimates from them."""

    __tablename__ = "kind_stats"

    kind: str = Field(primary_key=True)
    peaks_mb: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class InstanceRow(SQLModel, table=True):
    """One boot of the service: a fresh id every time, never the host name (pods and hosts reuse
    theirs). ``machine`` (kernel boot id and pid namespace) lets a peer on the same machine see at
    once that the process is gone, without waiting for its heartbeat to go stale."""

    __tablename__ = "instances"

    id: str = Field(primary_key=True)
    role: str
    host: str  # for people reading /admin; never used to decide anything
    machine: str
    pid: int
    pid_start: int  # the process's start time in clock ticks: a reused pid is another process
    started_at: datetime = Field(sa_type=DateTime(timezone=True))
    heartbeat_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    limit_mb: float = 0.0
    budget_mb: float = 0.0
    enforcement: str = ""
    running: int = 0
    listening: bool = False


class TaskFileRow(SQLModel, table=True):
    """Uploaded inputs of a task, in chunks, where the database is shared (PostgreSQL)."""

    __tablename__ = "task_files"

    task_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class TaskOutputRow(SQLModel, table=True):
    """Files a task wrote (its result lists them), in chunks, where the database is shared (PostgreSQL)."""

    __tablename__ = "task_outputs"

    task_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
