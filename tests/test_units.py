"""Pieces of the supervisor on their own: verdicts, the state machine, the store, admission, protocol."""

from __future__ import annotations

import pickle
from pathlib import Path

import msgpack
import pytest

from supervisor.admission import Admission
from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe
from supervisor.states import FINAL, Reason, State, is_legal
from supervisor.store import Store, TaskRow
from supervisor.verdict import Ending, judge, should_retry
from supervisor.watchdog import Watchdog
from supervisor.worker import RunningWorker
from workers import protocol
from workers.errors import ProtocolError
from workers.registry import KindSpec


def test_an_answer_wins_over_how_the_worker_died() -> None:
    verdict = judge(Ending(-9, {"result": {"x": 1}}, Reason.MEMORY_CEILING, task_oom=True))
    assert (verdict.state, verdict.result) == (State.SUCCEEDED, {"x": 1})


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        (Ending(-9, kill_reason=Reason.MEMORY_CEILING), (State.KILLED, Reason.MEMORY_CEILING)),
        (Ending(-15, kill_reason=Reason.TIMEOUT), (State.TIMED_OUT, Reason.TIMEOUT)),
        (Ending(-15, kill_reason=Reason.CANCELLED), (State.CANCELLED, Reason.CANCELLED)),
        (Ending(-9, task_oom=True, pool_oom=True), (State.KILLED, Reason.MEMORY_CEILING)),
        (Ending(-9, pool_oom=True), (State.KILLED, Reason.CONTAINER_PRESSURE)),
        (Ending(-11), (State.FAILED, Reason.CRASHED)),
        (Ending(3), (State.FAILED, Reason.CRASHED)),
        (Ending(255, zygote_lost=True), (State.FAILED, Reason.INTERRUPTED)),
    ],
)
def test_verdicts(ending: Ending, expected: tuple[State, Reason]) -> None:
    verdict = judge(ending)
    assert (verdict.state, verdict.reason) == expected


def test_non_object_results_are_failures() -> None:
    assert judge(Ending(0, {"result": [1, 2]})).state == State.FAILED
    error = {"error": {"type": "ValueError", "message": "m"}}
    assert judge(Ending(0, error)).error_type == "ValueError"


def test_retry_policy() -> None:
    pressure = judge(Ending(-9, kill_reason=Reason.CONTAINER_PRESSURE))
    ceiling = judge(Ending(-9, kill_reason=Reason.MEMORY_CEILING))
    assert should_retry(pressure, retriable=True, attempts=1, max_attempts=3)
    assert not should_retry(pressure, retriable=True, attempts=3, max_attempts=3)
    assert not should_retry(pressure, retriable=False, attempts=1, max_attempts=3)
    assert not should_retry(ceiling, retriable=True, attempts=1, max_attempts=3)


def test_a_transient_error_is_retried_and_any_other_error_is_final() -> None:
    """Only errors the worker marked transient (workers.errors.TransientError) may pass."""
    away = judge(
        Ending(0, {"error": {"type": "VectorStoreUnavailableError", "message": "m", "transient": True}})
    )
    raised = judge(Ending(0, {"error": {"type": "ValueError", "message": "m"}}))
    forged = judge(Ending(0, {"error": {"type": "ValueError", "message": "m", "transient": "yes"}}))
    assert (away.state, away.reason, away.transient) == (State.FAILED, Reason.ERROR, True)
    assert should_retry(away, retriable=True, attempts=1, max_attempts=3)
    assert not should_retry(away, retriable=True, attempts=3, max_attempts=3)
    assert not should_retry(away, retriable=False, attempts=1, max_attempts=3)
    assert not should_retry(raised, retriable=True, attempts=1, max_attempts=3)
    assert not should_retry(forged, retriable=True, attempts=1, max_attempts=3)


def test_final_states_have_no_way_out() -> None:
    for state in FINAL:
        assert not any(is_legal(state, other) for other in State)
    assert is_legal(State.RUNNING, State.QUEUED) and not is_legal(State.QUEUED, State.SUCCEEDED)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'db.sqlite'}")


def _row() -> TaskRow:
    return TaskRow(kind="k", payload={"a": 1}, timeout_s=1, ceiling_mb=10, estimate_mb=5)


def test_store_transitions_are_compare_and_set(tmp_path: Path) -> None:
    store = _store(tmp_path)
    row = store.insert(_row())
    assert store.transition(row.id, State.RUNNING, src=State.QUEUED)
    assert not store.transition(row.id, State.RUNNING, src=State.QUEUED)
    assert store.transition(row.id, State.SUCCEEDED, result={"ok": True})
    assert not store.transition(row.id, State.CANCELLED)
    final = store.get(row.id)
    assert final is not None and final.state == State.SUCCEEDED and final.result == {"ok": True}
    with pytest.raises(ValueError, match="illegal"):
        store.transition(row.id, State.SUCCEEDED, src=State.QUEUED)


def test_admission_keeps_recent_peaks_and_the_store_keeps_them_across_restarts(tmp_path: Path) -> None:
    admission = Admission(SupervisorSettings(estimate_history=3), ContainerProbe(512), lambda: 100.0, {})
    for peak in range(1, 8):
        kept = admission.observe("k", float(peak))
    assert kept == [5.0, 6.0, 7.0]
    store = _store(tmp_path)
    store.save_peaks("k", [1.0])
    store.save_peaks("k", kept)
    assert _store(tmp_path).peaks() == {"k": [5.0, 6.0, 7.0]}


def _spec(estimate_mb: float = 100, ceiling_mb: float = 300) -> KindSpec:
    return KindSpec("k", lambda p, c: {}, object, estimate_mb, ceiling_mb, 1, False, None, "m", "")  # type: ignore[arg-type]


def test_estimates_learn_from_peaks() -> None:
    settings = SupervisorSettings(estimate_min_samples=3, estimate_headroom=1.1)
    admission = Admission(settings, ContainerProbe(512), lambda: 100.0, {})
    spec = _spec()
    assert admission.estimate_mb(spec) == 100
    admission.observe("k", 50.0)
    assert admission.estimate_mb(spec) == 100, "one small peak must not lower the declaration"
    admission.observe("k", 60.0)
    admission.observe("k", 40.0)
    assert admission.estimate_mb(spec) == pytest.approx(66.0)
    admission.observe("k", 500.0)
    assert admission.estimate_mb(spec) == 300, "an estimate never exceeds the ceiling"
    assert admission.need_mb(spec, ceiling_mb=120) == 120


def test_budget_leaves_room_for_the_api_and_the_margin() -> None:
    settings = SupervisorSettings(safety_margin_mb=40)
    budget = Admission(settings, ContainerProbe(512), lambda: 100.0, {}).budget()
    assert budget.limit_mb <= 512
    assert budget.budget_mb == pytest.approx(budget.limit_mb - 140)


def test_protocol_rejects_anything_but_its_own_maps() -> None:
    frame = protocol.encode(protocol.RESULT, result={"x": 1})
    assert protocol.decode(frame, protocol.WORKER_TYPES)["result"] == {"x": 1}
    hostile = [
        pickle.dumps({"type": "result"}),
        b"\xff\x00garbage",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"type": "task"}),
        b"",
    ]
    for bad in hostile:
        with pytest.raises(ProtocolError):
            protocol.decode(bad, protocol.WORKER_TYPES)
    with pytest.raises(ProtocolError, match="exceeds"):
        protocol.decode(b"\x00" * (protocol.MAX_FRAME_BYTES + 1), protocol.WORKER_TYPES)


def test_settings_refuse_several_uvicorn_workers() -> None:
    with pytest.raises(ValueError, match="WEB_CONCURRENCY=2"):
        SupervisorSettings(web_concurrency=2)


def _worker(rss_mb: float, growth_mb_s: float, ceiling_mb: float = 200) -> RunningWorker:
    worker = RunningWorker("t", "k", 1, b"t:1", ceiling_mb, 50, 60, False, 1)
    worker.rss_mb, worker.growth_mb_s = rss_mb, growth_mb_s
    return worker


def test_watchdog_samples_faster_as_a_tree_nears_its_ceiling() -> None:
    settings = SupervisorSettings(poll_interval_ms=50, fast_poll_interval_ms=10, min_poll_interval_ms=2)
    dog = Watchdog(settings, lambda pids: 0.0, lambda: 1e9)
    assert dog._next_interval_s([]) == 0.05
    assert dog._next_interval_s([_worker(40, 0)]) == 0.05
    assert dog._next_interval_s([_worker(160, 0)]) == 0.01, "past 75 % of the ceiling"
    assert dog._next_interval_s([_worker(100, 1000)]) == pytest.approx(0.05), "100 MB left at 1 GB/s"
    assert dog._next_interval_s([_worker(180, 1000)]) == pytest.approx(0.01)
    assert dog._next_interval_s([_worker(199, 1000)]) == 0.002, "never below the floor"


def test_growth_is_measured_between_samples() -> None:
    worker = _worker(0, 0)
    worker.observe(10, now=100.0)
    assert worker.seconds_to_ceiling() == float("inf")
    worker.observe(60, now=100.05)  # 50 MB in 50 ms: 1 GB/s
    assert worker.growth_mb_s == pytest.approx(1000)
    assert worker.seconds_to_ceiling() == pytest.approx(0.14)
    worker.observe(50, now=100.1)
    assert worker.seconds_to_ceiling() == float("inf"), "a shrinking tree is not heading anywhere"
    assert worker.peak_rss_mb == 60
