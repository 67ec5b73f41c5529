"""How a finished worker's task ends: one pure function from what was observed to a final record."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from supervisor.states import KILL_STATES, RETRY_REASONS, Reason, State


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: Reason | None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    transient: bool = False  # the task raised an error that may pass (workers.errors.TransientError)


@dataclass(frozen=True)
class Ending:
    """What the supervisor observed of one attempt's end."""

    exit_code: int | None
    outcome: dict[str, Any] | None = None  # what the worker answered, if it did
    kill_reason: Reason | None = None  # recorded before any signal was sent
    task_oom: bool = False  # the kernel OOM-killed inside the task's own cgroup (its ceiling)
    pool_oom: bool = False  # ... inside the workers' pool (the container's share for workers)
    zygote_lost: bool = False
    data_limited: bool = False  # the worker ran under an RLIMIT_DATA set from its ceiling


MEMORY_ERROR = "MemoryError"
_MEMORY_KILLS = (None, Reason.MEMORY_CEILING)


def judge(ending: Ending) -> Verdict:
    """An answer the worker sent wins over how it died afterwards; a recorded kill wins over a crash."""
    if ending.outcome is not None:
        verdict = _from_outcome(ending.outcome)
        if ending.data_limited and verdict.error_type == MEMORY_ERROR and ending.kill_reason in _MEMORY_KILLS:
            # The kernel refused memory past the limit set from the task's ceiling: that is the
            # ceiling stopping the task, not the task failing.
            return Verdict(
                State.KILLED,
                Reason.MEMORY_CEILING,
                error_type=verdict.error_type,
                error_message=verdict.error_message or "the memory limit set from the ceiling was reached",
            )
        return verdict
    if ending.kill_reason is not None:
        return Verdict(KILL_STATES.get(ending.kill_reason, State.KILLED), ending.kill_reason)
    if ending.task_oom:
        return Verdict(State.KILLED, Reason.MEMORY_CEILING)
    if ending.pool_oom:
        return Verdict(State.KILLED, Reason.CONTAINER_PRESSURE)
    if ending.zygote_lost:
        return Verdict(State.FAILED, Reason.INTERRUPTED, error_message="the zygote died")
    message = _death(ending.exit_code)
    return Verdict(State.FAILED, Reason.CRASHED, error_type="WorkerCrashed", error_message=message)


def should_retry(verdict: Verdict, retriable: bool, attempts: int, max_attempts: int) -> bool:
    may_pass = verdict.reason in RETRY_REASONS or verdict.transient
    return retriable and may_pass and attempts < max_attempts


def exit_fields(exit_code: int | None) -> dict[str, int | None]:
    """os.waitstatus_to_exitcode reports death by signal N as exit code -N."""
    if exit_code is None:
        return {"exit_code": None, "signal": None}
    if exit_code < 0:
        return {"exit_code": None, "signal": -exit_code}
    return {"exit_code": exit_code, "signal": None}


def _from_outcome(outcome: dict[str, Any]) -> Verdict:
    if "error" in outcome:
        error = outcome["error"] if isinstance(outcome["error"], dict) else {}
        return Verdict(
            State.FAILED,
            Reason.ERROR,
            error_type=str(error.get("type", "Error")),
            error_message=str(error.get("message", "")),
            transient=error.get("transient") is True,
        )
    result = outcome.get("result")
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        result = None
    if not isinstance(result, dict):
        return Verdict(
            State.FAILED,
            Reason.ERROR,
            error_type="InvalidResult",
            error_message="the task returned something other than a JSON object",
        )
    return Verdict(State.SUCCEEDED, None, result=result)


def _death(exit_code: int | None) -> str:
    if exit_code is None:
        return "the worker vanished"
    if exit_code < 0:
        return f"the worker died of signal {-exit_code}"
    return f"the worker exited with code {exit_code} without an answer"
