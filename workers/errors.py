"""The project's one exception tree. Its root lives here, at the bottom of the dependency graph,
because workers, supervisor and api all raise or catch these."""

from __future__ import annotations


class MemvisorError(Exception):
    """Root of every error memvisor raises on purpose."""


class ConfigError(MemvisorError):
    """A setting is invalid; raised at startup, before anything runs."""


class WorkerError(MemvisorError):
    """Raised on the worker side of the protocol."""


class UnknownKindError(WorkerError, KeyError):
    """No kind of that name is registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown kind {self.name!r}; known kinds: {', '.join(self.known) or 'none'}"


class TaskInputError(WorkerError, ValueError):
    """The task's input cannot be processed (corrupt file, too many pixels, ...): a clear, final error."""


class TransientError(WorkerError):
    """Something outside the task failed and may come back (a store, a service): a task of a retriable
    kind that raises one is tried again, while attempts remain."""


class VectorStoreUnavailableError(TransientError):
    """The RAG kinds' vector store cannot be reached (the Chroma server at CHROMA_URL is down), or
    this instance may not use its local one (ROLE=worker without CHROMA_URL)."""


class LLMError(WorkerError):
    """The agent's chat-completions call failed; the message says how, for the caller. The agent
    catches it and answers by quoting instead."""


class EmbeddingModelMissingError(WorkerError, RuntimeError):
    """A model package of the RAG kinds is not installed: the worker image is incomplete."""


class ProtocolError(WorkerError):
    """A frame on the broker socket is not a valid protocol message."""


class ResultTooLargeError(WorkerError):
    """A task's result, encoded, exceeds the largest frame the broker accepts: the task ends failed
    (a retry would only run its side effects again to the same end). Large outputs go in files."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"the result is {size_bytes} bytes encoded, over the {limit_bytes}-byte limit "
            f"({limit_bytes // (1024 * 1024)} MiB); write large outputs to the task's output files"
        )


class KindDisabledError(MemvisorError):
    """The kind exists but a setting switches it off (or a missing one keeps it off: ``switch`` names
    the setting either way)."""

    def __init__(self, name: str, switch: str, message: str | None = None) -> None:
        super().__init__(message or f"kind {name!r} is disabled by {switch}=true")
        self.name = name
        self.switch = switch


class SandboxError(WorkerError):
    """A worker could not put on the protections it was asked for; its task does not run."""
