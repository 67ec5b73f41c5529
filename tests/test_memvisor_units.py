"""The public package's pure parts: the SSE parser, retry decisions, the reason -> exception table,
settings read with the MEMVISOR_ prefix, the data directory's lock, and a light import."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memvisor
from harness.server import run_fresh
from memvisor.errors import ERRORS_BY_REASON, Unreachable, error_for, refusal_for, result_of
from memvisor.http import RETRY_STATUSES, Call, Policy, Retry, Steps, parse_retry_after, retry_delay_s
from memvisor.lock import DataDirInUseError, DataDirLock
from memvisor.sse import Event, EventParser
from supervisor.states import Reason

names = st.text(st.characters(categories=["L", "N"], include_characters="._-"), min_size=1, max_size=20)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _encode(event: Event) -> list[str]:
    text = json.dumps(event.data, indent=1)  # several lines: several data fields
    return [f"event: {event.event}", *(f"data: {line}" for line in text.split("\n")), ""]


@given(st.lists(st.builds(Event, names, values), max_size=6), st.booleans())
def test_sse_parser_gives_back_every_event(events: list[Event], pings: bool) -> None:
    parser = EventParser()
    lines = [line for event in events for line in ([": ping", ""] if pings else []) + _encode(event)]
    parsed = [e for line in lines if (e := parser.feed(line)) is not None]
    assert parsed == events


@given(
    st.sampled_from([None, 200, 400, 404, 422, 429, 500, 503]),
    st.one_of(st.none(), st.integers(0, 10_000).map(str), st.just("garbage")),
    st.integers(0, 10),
    st.integers(0, 10),
    st.floats(0, 120),
)
def test_retry_delays_are_bounded_and_honour_retry_after(
    status: int | None, retry_after: str | None, attempt: int, retries: int, max_wait_s: float
) -> None:
    delay_s = retry_delay_s(status, retry_after, attempt, retries, max_wait_s)
    retriable = status is None or status in RETRY_STATUSES
    if attempt >= retries or not retriable:
        assert delay_s is None
        return
    assert delay_s is not None and 0 <= delay_s <= max_wait_s
    if retry_after is not None and retry_after.isdigit():
        assert delay_s == min(float(retry_after), max_wait_s)


def _policy(retries: int, seen: list[Retry]) -> Policy:
    return Policy(
        base_url="http://mv/jobs",
        api_key=None,
        token=None,
        timeout_s=5,
        retries=retries,
        max_retry_wait_s=60,
        on_retry=seen.append,
    )


def _script(steps: Steps, outcomes: list[httpx.Response | Exception]) -> tuple[list[object], object]:
    """Drive a client operation with canned outcomes, as a client would with its I/O."""
    made: list[object] = []
    answer: httpx.Response | Exception | None = None
    try:
        while True:
            step = steps.send(answer)
            made.append(step)
            answer = outcomes.pop(0) if isinstance(step, Call) else None
    except StopIteration as done:
        return made, done.value


def test_a_client_operation_retries_a_503_after_its_retry_after_then_decodes() -> None:
    seen: list[Retry] = []
    busy = httpx.Response(503, headers={"retry-after": "2"}, json={"detail": "busy"})
    made, value = _script(
        _policy(3, seen).send(Call("GET", "/v1/kinds")),
        [busy, httpx.ConnectError("refused"), httpx.Response(200, json=[1])],
    )
    assert value == [1]
    assert [s for s in made if not isinstance(s, Call)] == [2.0, 1.0]  # Retry-After, then 0.5 * 2**1
    assert [(r.attempt, r.status) for r in seen] == [(1, 503), (2, None)]
    assert seen[0].url == "http://mv/jobs/v1/kinds"


def test_a_client_operation_gives_up_unreachable_once_its_retries_are_spent() -> None:
    seen: list[Retry] = []
    with pytest.raises(Unreachable, match="cannot reach memvisor at http://mv/jobs/v1/kinds"):
        _script(_policy(1, seen).send(Call("GET", "/v1/kinds")), [httpx.ConnectError("x")] * 2)
    assert len(seen) == 1


def test_run_waits_past_the_submit_until_the_task_is_final() -> None:
    queued = httpx.Response(202, json={"id": "t1", "state": "queued"})
    done = httpx.Response(200, json={"id": "t1", "state": "succeeded", "result": {"n": 1}})
    submit = Call("POST", "/v1/tasks")
    made, value = _script(_policy(0, []).run(submit, 30.0, None), [queued, queued, done])
    assert value == {"n": 1}
    assert [s.path for s in made if isinstance(s, Call)] == ["/v1/tasks", "/v1/tasks/t1", "/v1/tasks/t1"]


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7
    assert parse_retry_after(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0


def test_every_final_reason_has_its_exception() -> None:
    final_reasons = {str(r) for r in Reason}
    assert set(ERRORS_BY_REASON) == final_reasons
    for reason, error_class in ERRORS_BY_REASON.items():
        task = {"id": "t1", "kind": "k", "state": "killed", "reason": reason}
        error = error_for(task)
        assert type(error) is error_class and error.task is task and error.reason == reason
        assert isinstance(error, memvisor.TaskError) and isinstance(error, memvisor.MemvisorError)
        with pytest.raises(error_class):
            result_of(task)
    assert type(error_for({"state": "failed", "reason": "from_the_future"})) is memvisor.TaskError
    assert error_for({"state": "succeeded", "result": {}}) is None
    assert result_of({"state": "succeeded", "result": {"x": 1}}) == {"x": 1}
    with pytest.raises(TimeoutError):
        result_of({"id": "t", "state": "running"})


def test_refusals_are_typed_by_status() -> None:
    assert isinstance(refusal_for(429, {"detail": "full"}, 3), memvisor.QueueFull)
    assert isinstance(refusal_for(404, "gone"), memvisor.TaskNotFound)
    assert type(refusal_for(418, {})) is memvisor.RequestRefused


def test_prefixed_settings_win_over_plain_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.config import ApiSettings
    from supervisor.config import SupervisorSettings
    from workers.agent_config import AgentSettings
    from workers.config import KindSettings
    from workers.ocr.settings import model_dir

    monkeypatch.setenv("MAX_QUEUE", "7")
    monkeypatch.setenv("DATABASE_URL", "postgresql://host-app/db")
    monkeypatch.setenv("MEMVISOR_DATABASE_URL", "sqlite:///mine.db")
    monkeypatch.setenv("MEMVISOR_MAX_BODY_MB", "3")
    monkeypatch.setenv("MEMVISOR_TASK_MODULES", "a.b")
    monkeypatch.setenv("MEMVISOR_LLM_MODEL", "prefixed")
    monkeypatch.setenv("LLM_MODEL", "plain")
    settings = SupervisorSettings()
    assert settings.database_url == "sqlite:///mine.db" and settings.max_queue == 7
    assert SupervisorSettings(max_queue=9).max_queue == 9  # values given in code win over both
    assert ApiSettings().max_body_mb == 3
    assert KindSettings().user_modules() == ["a.b"]
    assert AgentSettings().model == "prefixed"
    monkeypatch.setenv("OCR_MODEL_DIR", "/plain/ocr")
    monkeypatch.setenv("MEMVISOR_OCR_MODEL_DIR", "/prefixed/ocr")
    assert model_dir() == Path("/prefixed/ocr")  # read outside a settings class, the same way
    monkeypatch.setenv("MEMVISOR_MAX_QUEUE", "zero")
    with pytest.raises(ValueError, match="max_queue"):
        SupervisorSettings()


def test_a_second_lock_on_a_data_dir_is_refused_until_the_first_is_released(tmp_path: Path) -> None:
    first, second = DataDirLock(tmp_path), DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirInUseError, match=r"in use by another memvisor supervisor \(pid \d+\)"):
            second.acquire()
    finally:
        first.release()
    second.check()


def test_importing_memvisor_for_a_kind_module_stays_light() -> None:
    """Kind modules import memvisor in every worker: the service's libraries must not come with it."""
    loaded = run_fresh(
        """
        import json, sys
        import memvisor
        from memvisor import TaskContext, TaskError, task_kind
        heavy = ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "httpx", "zmq", "api", "supervisor")
        print(json.dumps({"loaded": [m for m in heavy if m in sys.modules]}))
        """
    )
    assert loaded == {"loaded": []}
