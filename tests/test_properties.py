"""Properties, checked by Hypothesis: the state machine only ever takes legal transitions, and
admission never hands out more memory than the budget."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from supervisor.admission import plan
from supervisor.states import State, is_legal
from supervisor.store import Store, TaskRow

STATES = list(State)


class StoreStateMachine(RuleBasedStateMachine):
    """Random transition requests against a real store and a plain model of what should happen."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = Store(f"sqlite:///{Path(self.dir.name) / 'db.sqlite'}")
        self.model: dict[str, State] = {}

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @rule()
    def add(self) -> None:
        row = self.store.insert(TaskRow(kind="k", timeout_s=1, ceiling_mb=10, estimate_mb=5))
        self.model[row.id] = State.QUEUED

    @precondition(lambda self: self.model)
    @rule(data=st.data(), dst=st.sampled_from(STATES), src=st.none() | st.sampled_from(STATES))
    def move(self, data: st.DataObject, dst: State, src: State | None) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.model)))
        current = self.model[task_id]
        if src is not None and not is_legal(src, dst):
            try:
                self.store.transition(task_id, dst, src=src)
            except ValueError:
                return
            raise AssertionError(f"{src} -> {dst} was not refused")
        moved = self.store.transition(task_id, dst, src=src)
        expected = is_legal(current, dst) and (src is None or src == current)
        assert moved == expected, (current, src, dst)
        if moved:
            self.model[task_id] = dst

    @invariant()
    def store_matches_model(self) -> None:
        for task_id, state in self.model.items():
            row = self.store.get(task_id)
            assert row is not None and row.state == state


TestStoreStateMachine = StoreStateMachine.TestCase
TestStoreStateMachine.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)

needs = st.lists(st.none() | st.floats(min_value=1, max_value=1000), max_size=30)


@given(needs=needs, committed=st.floats(0, 1000), budget=st.floats(0, 1000), slots=st.integers(-2, 20))
@settings(max_examples=500)
def test_admission_never_exceeds_the_budget(
    needs: list[float | None], committed: float, budget: float, slots: int
) -> None:
    decision = plan(needs, committed, budget, slots)
    started = [needs[p] for p in decision.start]
    assert all(n is not None for n in started)
    if started:
        assert committed + sum(n for n in started if n is not None) <= budget + 1e-9
    assert len(started) <= max(slots, 0)


@given(needs=needs, committed=st.floats(0, 1000), budget=st.floats(0, 1000), slots=st.integers(0, 20))
@settings(max_examples=500)
def test_admission_is_first_in_first_out(
    needs: list[float | None], committed: float, budget: float, slots: int
) -> None:
    decision = plan(needs, committed, budget, slots)
    decided = sorted(decision.start + decision.refuse)
    assert decided == list(range(len(decided))), "only a prefix of the queue is decided"
    assert all(needs[p] is None or needs[p] > budget for p in decision.refuse)  # type: ignore[operator]
    assert all(needs[p] is not None and needs[p] <= budget for p in decision.start)  # type: ignore[operator]
    if len(decided) < len(needs):  # stopped early: the next task waits for memory or a slot
        nxt = needs[len(decided)]
        assert nxt is not None and nxt <= budget
        used = committed + sum(needs[p] for p in decision.start)  # type: ignore[misc]
        assert len(decision.start) >= slots or used + nxt > budget
