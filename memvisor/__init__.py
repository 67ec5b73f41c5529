"""memvisor's public surface.

- ``Memvisor``: memvisor inside your FastAPI app (``lifespan``, ``router``, ``submit``, ``run``);
- ``task_kind``, ``TaskContext``: declare your own kinds (in a module named by ``TASK_MODULES`` or
  ``Memvisor(task_modules=[...])``);
- ``Client``, ``AsyncClient``: a remote memvisor over HTTP;
- ``TaskError`` and its subclasses, one per way a task can end; ``RequestRefused`` and its subclasses.

Kind modules import this package in every worker, so importing it stays light: ``Memvisor`` (FastAPI,
the supervisor) and the clients (httpx) are imported on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memvisor.errors import (
    ContainerPressure,
    InvalidTask,
    KilledByAdmin,
    MemoryCeilingExceeded,
    MemvisorError,
    NotCancellable,
    QueueFull,
    RequestRefused,
    ServiceUnavailable,
    TaskCancelled,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskInterrupted,
    TaskNotFound,
    TaskTimedOut,
    TooBigForBudget,
    Unauthorized,
    Unreachable,
)
from workers.registry import TaskContext, task_kind

if TYPE_CHECKING:
    from memvisor.client import AsyncClient, Client
    from memvisor.embedded import Memvisor, TaskHandle

__all__ = [
    "AsyncClient",
    "Client",
    "ContainerPressure",
    "InvalidTask",
    "KilledByAdmin",
    "MemoryCeilingExceeded",
    "Memvisor",
    "MemvisorError",
    "NotCancellable",
    "QueueFull",
    "RequestRefused",
    "ServiceUnavailable",
    "TaskCancelled",
    "TaskContext",
    "TaskCrashed",
    "TaskError",
    "TaskFailed",
    "TaskHandle",
    "TaskInterrupted",
    "TaskNotFound",
    "TaskTimedOut",
    "TooBigForBudget",
    "Unauthorized",
    "Unreachable",
    "task_kind",
]

_LAZY = {
    "Memvisor": "memvisor.embedded",
    "TaskHandle": "memvisor.embedded",
    "Client": "memvisor.client",
    "AsyncClient": "memvisor.client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'memvisor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
