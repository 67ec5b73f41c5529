"""Errors the supervisor raises; all descend from the project's root, MemvisorError."""

from __future__ import annotations

from workers.errors import ConfigError, KindDisabledError, MemvisorError, UnknownKindError

__all__ = [
    "AdmissionRefusedError",
    "ConfigError",
    "DrainingError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "KindDisabledError",
    "MemvisorError",
    "NotCancellableError",
    "QueueFullError",
    "StoreUnavailableError",
    "SupervisorError",
    "TaskNotFoundError",
    "UnknownKindError",
    "ZygoteLostError",
]


class SupervisorError(MemvisorError):
    """Base of the supervisor's refusals and failures."""


class TaskNotFoundError(SupervisorError, KeyError):
    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id

    def __str__(self) -> str:
        return f"no task {self.task_id!r}"


class OutputNotFoundError(TaskNotFoundError):
    """The task has no output file of that name: never written, not listed, or past its retention."""

    def __init__(self, task_id: str, name: str) -> None:
        super().__init__(task_id)
        self.name = name

    def __str__(self) -> str:
        return f"task {self.task_id!r} has no file {self.name!r} (never written, or past its retention)"


class InvalidRequestError(SupervisorError, ValueError):
    """A submission's own fields (payload, timeout_s, ceiling_mb) are invalid."""


class AdmissionRefusedError(SupervisorError):
    """The task can never fit the memory budget."""

    reason = "too_big_for_budget"

    def __init__(self, kind: str, needed_mb: float, budget_mb: float) -> None:
        super().__init__(
            f"task of kind {kind!r} needs {needed_mb:.0f} MB but the memory budget is "
            f"{budget_mb:.0f} MB (the largest of any live instance): it can never run"
        )
        self.needed_mb = needed_mb
        self.budget_mb = budget_mb


class IdempotencyConflictError(InvalidRequestError):
    """An Idempotency-Key already names a task of another kind or payload."""

    def __init__(self, key: str, task_id: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used for task {task_id} with a different kind or "
            "payload; use a new key for a new task"
        )
        self.task_id = task_id


class QueueFullError(SupervisorError):
    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"queue is full ({depth} tasks waiting); retry later")
        self.retry_after_s = retry_after_s


class DrainingError(SupervisorError):
    """The service is draining (shutdown or admin drain) and admits no new task."""


class NotCancellableError(SupervisorError):
    def __init__(self, task_id: str, state: str) -> None:
        super().__init__(f"task {task_id} is already {state}")
        self.state = state


class StoreUnavailableError(SupervisorError):
    """The database cannot be reached or is locked."""


class ZygoteLostError(SupervisorError):
    """The zygote died or could not be started."""
