"""Limits that change at run time, a submission's own bounds, and the memory report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from supervisor.accounting import Accounting
from supervisor.admission import Admission
from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe
from supervisor.errors import InvalidRequestError
from supervisor.host import WorkerHost
from supervisor.spares import Spares
from supervisor.worker import RunningWorker
from workers.catalog import Catalog

RUNTIME_LIMITS = frozenset(
    {
        "poll_interval_ms",
        "fast_poll_interval_ms",
        "min_poll_interval_ms",
        "fast_poll_ratio",
        "safety_margin_mb",
        "container_high_water_pct",
        "max_concurrency",
        "max_queue",
        "term_grace_s",
    }
)


class Limits:
    def __init__(
        self,
        settings: SupervisorSettings,
        catalog: Catalog,
        admission: Admission,
        changed: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.admission = admission
        self.changed = changed

    def current(self) -> dict[str, Any]:
        values = self.settings.model_dump(include=set(RUNTIME_LIMITS))
        return {**values, "kind_ceilings_mb": dict(self.admission.ceiling_overrides)}

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate every change against the settings' own rules, then apply all of them or none."""
        ceilings = changes.pop("kind_ceilings_mb", None) or {}
        unknown = sorted(set(changes) - RUNTIME_LIMITS) + sorted(set(ceilings) - set(self.catalog.kinds))
        if unknown:
            raise InvalidRequestError(f"not a runtime limit or kind: {', '.join(unknown)}")
        if any(not isinstance(mb, int | float) or mb <= 0 for mb in ceilings.values()):
            raise InvalidRequestError("kind ceilings must be positive numbers of MB")
        try:
            merged = SupervisorSettings.model_validate({**self.settings.model_dump(), **changes})
        except ValidationError as exc:
            reasons = "; ".join(str(error["msg"]) for error in exc.errors())
            raise InvalidRequestError(f"limits refused: {reasons}") from None
        for name in changes:
            object.__setattr__(self.settings, name, getattr(merged, name))
        self.admission.ceiling_overrides.update({k: float(v) for k, v in ceilings.items()})
        self.changed()
        return self.current()

    def timeout(self, requested_s: float | None, default_s: float) -> float:
        timeout_s = default_s if requested_s is None else requested_s
        if not 0 < timeout_s <= self.settings.max_timeout_s:
            raise InvalidRequestError(f"timeout_s must be in (0, {self.settings.max_timeout_s:g}]")
        return float(timeout_s)

    @staticmethod
    def ceiling(requested_mb: float | None, kind_mb: float, budget_mb: float | None) -> float:
        """The task's ceiling: the kind's, or the one asked for, within the largest live budget
        (unknown while no instance that runs tasks is alive: checked when one claims it)."""
        if requested_mb is None:
            return min(kind_mb, budget_mb) if budget_mb else kind_mb
        if requested_mb <= 0:
            raise InvalidRequestError("ceiling_mb must be positive")
        if budget_mb is not None and requested_mb > budget_mb:
            raise InvalidRequestError(
                f"ceiling_mb {requested_mb:.0f} MB exceeds the memory budget of {budget_mb:.0f} MB"
            )
        return float(requested_mb)

    def memory_report(
        self,
        accounting: Accounting,
        probe: ContainerProbe,
        host: WorkerHost,
        spares: Spares,
        workers: list[RunningWorker],
    ) -> dict[str, Any]:
        budget = self.admission.budget()
        usage = accounting.usage()
        return {
            "limit_mb": round(budget.limit_mb, 1),
            "limit_source": budget.limit_source,
            "usage_mb": round(usage.value_mb, 1),
            "usage_source": usage.source,
            "api_and_zygote_mb": round(budget.base_mb, 1),
            "safety_margin_mb": budget.margin_mb,
            "budget_mb": round(budget.budget_mb, 1),
            "committed_mb": round(accounting.committed_mb(), 1),
            "reservations": {w.task_id: w.reserved_mb for w in workers},
            "high_water_mb": round(accounting.high_water_mb(), 1),
            "container_oom_kills": probe.oom_kills(),
            "worker_cgroups": host.cgroups is not None,
            "spare_workers": list(spares.pids()),
            "spare_workers_ready": spares.ready_pids(),
            "estimates_mb": {
                name: round(self.admission.estimate_mb(spec), 1) for name, spec in self.catalog.kinds.items()
            },
        }
