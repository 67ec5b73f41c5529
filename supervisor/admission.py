"""Admission control: a task starts only when its estimated peak fits what the container can hold.

    budget = container limit - (API process + zygote) - safety margin

A running worker holds the larger of its reservation and its current usage, so a kind that
declared too little cannot crowd the container before its estimate has been learned.

Estimates start as each kind's declaration and are then learned from observed peaks: the largest of
the recent peaks with some headroom. Fewer than ``estimate_min_samples`` peaks can only raise an
estimate, never lower it below the declaration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe
from workers.registry import KindSpec

MIN_ESTIMATE_MB = 8.0


@dataclass(frozen=True)
class Budget:
    limit_mb: float
    limit_source: str
    base_mb: float  # API process + zygote
    margin_mb: float

    @property
    def budget_mb(self) -> float:
        return max(0.0, self.limit_mb - self.base_mb - self.margin_mb)


class Admission:
    def __init__(
        self,
        settings: SupervisorSettings,
        probe: ContainerProbe,
        base_mb: Callable[[], float],
        peaks: dict[str, list[float]],
        pool_backstop: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings = settings
        self.probe = probe
        self._base_mb = base_mb
        self._peaks = peaks
        self._pool_backstop = pool_backstop
        self.ceiling_overrides: dict[str, float] = {}  # set at run time by an admin

    def budget(self) -> Budget:
        return Budget(
            limit_mb=self.probe.limit.value_mb,
            limit_source=self.probe.limit.source,
            base_mb=self._base_mb(),
            margin_mb=self.settings.safety_margin_mb,
        )

    def ceiling_mb(self, spec: KindSpec) -> float:
        return self.ceiling_overrides.get(spec.name, spec.ceiling_mb)

    def estimate_mb(self, spec: KindSpec) -> float:
        peaks = self._peaks.get(spec.name, [])
        if not peaks:
            estimate = spec.estimate_mb
        else:
            learned = max(peaks) * self.settings.estimate_headroom
            few = len(peaks) < self.settings.estimate_min_samples
            estimate = max(spec.estimate_mb, learned) if few else learned
        return max(MIN_ESTIMATE_MB, min(estimate, self.ceiling_mb(spec)))

    def need_mb(self, spec: KindSpec, ceiling_mb: float) -> float:
        """What a task reserves (see ``reserve_mb``)."""
        return reserve_mb(self.estimate_mb(spec), ceiling_mb, self._pool_backstop())

    def observe(self, kind: str, peak_mb: float) -> list[float]:
        """Add an observed peak, keeping the newest ``estimate_history``; returns the kept list."""
        peaks = [*self._peaks.get(kind, []), round(peak_mb, 1)][-self.settings.estimate_history :]
        self._peaks[kind] = peaks
        return peaks

    def learn_shared(self, saved: dict[str, list[float]], pending: dict[str, list[float]]) -> None:
        """Adopt the peaks every instance saved, plus this one's not yet saved."""
        keep = self.settings.estimate_history
        kinds = set(saved) | set(pending)
        self._peaks = {k: [*saved.get(k, []), *pending.get(k, [])][-keep:] for k in kinds}


def reserve_mb(estimate_mb: float, ceiling_mb: float, pool_backstop: bool) -> float:
    """What a task reserves from the budget while it runs.

    With a kernel backstop for the workers' pool (a pool cgroup limited to what the API leaves), a
    task reserves its estimate: a worker outgrowing it meets the pool's limit, never the container's.
    Without one (Render: no cgroup can be written) nothing but the watchdog stands between the
    workers' growth and the container's OOM killer, which with memory.oom.group=1 restarts the whole
    instance; so a task reserves what it may grow to: its ceiling, where RLIMIT_DATA and the watchdog
    stop it. Measured with the hostile minute (see the README): reserving estimates without a pool
    backstop let five 300 MB allocators start at once in 512 MB.
    """
    if pool_backstop:
        return min(estimate_mb, ceiling_mb)
    return ceiling_mb


@dataclass(frozen=True)
class Plan:
    """What one scheduling round does with the head of the queue, in queue order."""

    start: list[int] = field(default_factory=list)  # positions in the queue
    refuse: list[int] = field(default_factory=list)  # positions that can never fit any budget
    skip: list[int] = field(default_factory=list)  # too big for this budget; left to a larger peer


def plan(
    needs_mb: Sequence[float | None],
    committed_mb: float,
    budget_mb: float,
    slots: int,
    largest_budget_mb: float | None = None,
) -> Plan:
    """First in, first out: start tasks from the head while they fit; stop at the first that does not.

    ``needs_mb[i]`` is the i-th queued task's need, or None if its kind is gone (refused). A task
    needing more than the largest budget of any live instance (``largest_budget_mb``, by default
    this one's) is refused rather than left blocking everyone behind it; one needing more than this
    instance's whole budget but no more than a peer's is skipped: it waits for that peer.
    """
    largest_mb = budget_mb if largest_budget_mb is None else max(budget_mb, largest_budget_mb)
    result = Plan()
    for position, need_mb in enumerate(needs_mb):
        if need_mb is None or need_mb > largest_mb:
            result.refuse.append(position)
            continue
        if need_mb > budget_mb:
            result.skip.append(position)
            continue
        if slots <= 0 or committed_mb + need_mb > budget_mb:
            break
        result.start.append(position)
        committed_mb += need_mb
        slots -= 1
    return result
