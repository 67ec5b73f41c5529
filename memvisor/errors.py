"""The errors memvisor's public surface raises, under the project's one root, ``MemvisorError``.

A task that ends other than ``succeeded`` raises a ``TaskError`` subclass chosen by its ``reason``:

| reason               | exception               | state                     |
|----------------------|-------------------------|---------------------------|
| `memory_ceiling`     | `MemoryCeilingExceeded` | killed                    |
| `container_pressure` | `ContainerPressure`     | killed                    |
| `admin_kill`         | `KilledByAdmin`         | killed                    |
| `timeout`            | `TaskTimedOut`          | timed_out                 |
| `crashed`            | `TaskCrashed`           | failed                    |
| `cancelled`          | `TaskCancelled`         | cancelled                 |
| `error`              | `TaskFailed`            | failed (the task raised)  |
| `interrupted`        | `TaskInterrupted`       | failed                    |
| `too_big_for_budget` | `TooBigForBudget`       | failed                    |
| anything else        | `TaskError`             |                           |

A request refused before any task exists (unknown kind, invalid payload, full queue...) raises a
``RequestRefused`` subclass chosen by the HTTP status the service answers with; in-process the same
classes are raised, from the same mapping.
"""

from __future__ import annotations

from typing import Any

from workers.errors import MemvisorError

__all__ = [
    "ContainerPressure",
    "KilledByAdmin",
    "MemoryCeilingExceeded",
    "MemvisorError",
    "NotCancellable",
    "QueueFull",
    "RequestRefused",
    "ServiceUnavailable",
    "TaskCancelled",
    "TaskCrashed",
    "TaskError",
    "TaskFailed",
    "TaskInterrupted",
    "TaskNotFound",
    "TaskTimedOut",
    "TooBigForBudget",
    "Unauthorized",
    "Unreachable",
    "error_for",
    "refusal_for",
    "result_of",
]


class TaskError(MemvisorError):
    """A task ended without a result. ``task`` is the whole task (as ``GET /v1/tasks/{id}`` shows it)."""

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.reason: str | None = task.get("reason")
        super().__init__(_describe(task))

    @property
    def task_id(self) -> str:
        return str(self.task.get("id", ""))


class MemoryCeilingExceeded(TaskError):
    """The worker reached its memory ceiling and was killed (``peak_rss_mb``, ``ceiling_mb``)."""


class ContainerPressure(TaskError):
    """The container neared its limit and this worker was the one killed to protect it."""


class KilledByAdmin(TaskError):
    """An administrator killed the worker."""


class TaskTimedOut(TaskError):
    """The task ran past its ``timeout_s``."""


class TaskCrashed(TaskError):
    """The worker died without an answer (a signal or an exit code is recorded)."""


class TaskCancelled(TaskError):
    """The task was cancelled."""


class TaskFailed(TaskError):
    """The task's function raised; ``task["error"]`` holds its type and message."""


class TaskInterrupted(TaskError):
    """The service stopped or restarted while the task ran, and it was not retried."""


class TooBigForBudget(TaskError):
    """The task could never fit the container's memory budget."""


ERRORS_BY_REASON: dict[str, type[TaskError]] = {
    "memory_ceiling": MemoryCeilingExceeded,
    "container_pressure": ContainerPressure,
    "admin_kill": KilledByAdmin,
    "timeout": TaskTimedOut,
    "crashed": TaskCrashed,
    "cancelled": TaskCancelled,
    "error": TaskFailed,
    "interrupted": TaskInterrupted,
    "too_big_for_budget": TooBigForBudget,
}
SUCCEEDED = "succeeded"
PENDING = frozenset({"queued", "running"})


def error_for(task: dict[str, Any]) -> TaskError | None:
    """The exception a final task stands for: None if it succeeded (or is not final yet)."""
    state = task.get("state")
    if state == SUCCEEDED or state in PENDING:
        return None
    return ERRORS_BY_REASON.get(str(task.get("reason")), TaskError)(task)


def result_of(task: dict[str, Any]) -> dict[str, Any]:
    """A final task's result; the ``TaskError`` of its reason; TimeoutError while it is not final."""
    if task.get("state") in PENDING:
        raise TimeoutError(f"task {task.get('id')} is still {task.get('state')}")
    error = error_for(task)
    if error is not None:
        raise error
    result: dict[str, Any] = task.get("result") or {}
    return result


def _describe(task: dict[str, Any]) -> str:
    text = f"task {task.get('id')} ({task.get('kind')}) {task.get('state')}"
    if task.get("reason"):
        text += f": {task['reason']}"
    error = task.get("error") or {}
    if error.get("message"):
        text += f": {error.get('type')}: {error['message']}"
    if task.get("reason") == "memory_ceiling":
        text += f" (peak {task.get('peak_rss_mb')} MB, ceiling {task.get('ceiling_mb')} MB)"
    return text


class RequestRefused(MemvisorError):
    """The service refused the request; ``status`` is its HTTP status, ``detail`` its explanation."""

    def __init__(self, status: int, body: dict[str, Any], retry_after_s: float | None = None) -> None:
        self.status = status
        self.body = body
        self.detail: Any = body.get("detail", body)
        self.retry_after_s = retry_after_s
        super().__init__(f"{status}: {self.detail}")


class Unauthorized(RequestRefused):
    """401: credentials missing or wrong."""


class TaskNotFound(RequestRefused):
    """404: no such task (or no such route: check the client's base URL)."""


class NotCancellable(RequestRefused):
    """409: the task is already final."""


class InvalidTask(RequestRefused):
    """422: unknown kind, invalid payload, a limit out of range, too big for the budget, or an
    Idempotency-Key reused for other work."""


class QueueFull(RequestRefused):
    """429: the queue stayed full through every retry."""


class ServiceUnavailable(RequestRefused):
    """503: the kind is disabled, the service is draining or starting, or its database is down."""


REFUSALS_BY_STATUS: dict[int, type[RequestRefused]] = {
    401: Unauthorized,
    404: TaskNotFound,
    409: NotCancellable,
    422: InvalidTask,
    429: QueueFull,
    503: ServiceUnavailable,
}


def refusal_for(status: int, body: Any, retry_after_s: float | None = None) -> RequestRefused:
    if not isinstance(body, dict):
        body = {"detail": body}
    return REFUSALS_BY_STATUS.get(status, RequestRefused)(status, body, retry_after_s)


class Unreachable(MemvisorError, ConnectionError):
    """The service could not be reached (connection refused, reset, timed out) through every retry."""
