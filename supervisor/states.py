"""The task state machine and the reasons a task ends the way it does."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Reason(StrEnum):
    ERROR = "error"  # the task raised; see error.type / error.message
    MEMORY_CEILING = "memory_ceiling"
    CONTAINER_PRESSURE = "container_pressure"
    TIMEOUT = "timeout"
    CRASHED = "crashed"  # the worker died without an answer: signal or exit code recorded
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the service stopped or restarted while the task ran
    TOO_BIG_FOR_BUDGET = "too_big_for_budget"
    ADMIN_KILL = "admin_kill"


FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.KILLED, State.TIMED_OUT, State.CANCELLED})

# RUNNING -> QUEUED is a retry (pressure, interruption, crash of a retriable kind).
LEGAL: dict[State, frozenset[State]] = {
    State.QUEUED: frozenset({State.RUNNING, State.CANCELLED, State.FAILED}),
    State.RUNNING: frozenset(FINAL | {State.QUEUED}),
}

# A kill for one of these reasons leaves the task in this state.
KILL_STATES: dict[Reason, State] = {
    Reason.MEMORY_CEILING: State.KILLED,
    Reason.CONTAINER_PRESSURE: State.KILLED,
    Reason.ADMIN_KILL: State.KILLED,
    Reason.TIMEOUT: State.TIMED_OUT,
    Reason.CANCELLED: State.CANCELLED,
    Reason.INTERRUPTED: State.FAILED,
}

# Reasons after which a retriable task runs again, if attempts remain.
RETRY_REASONS = frozenset({Reason.CONTAINER_PRESSURE, Reason.INTERRUPTED, Reason.CRASHED})


def sources_of(target: State) -> frozenset[State]:
    """The states from which ``target`` may be entered."""
    return frozenset(src for src, dests in LEGAL.items() if target in dests)


def is_legal(src: State, dst: State) -> bool:
    return dst in LEGAL.get(src, frozenset())
