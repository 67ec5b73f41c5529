"""The container's memory as the supervisor sees it: limit, usage, and where each figure came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from supervisor.memory import own_cgroup
from workers.units import MB

DEFAULT_LIMIT_MB = 512.0


@dataclass(frozen=True)
class Reading:
    value_mb: float
    source: str


class ContainerProbe:
    """Limit from the cgroup (or MEMORY_LIMIT_MB where lower or where no cgroup limit exists).

    Usage is the cgroup's working set only when the limit is the cgroup's: otherwise the cgroup may
    hold processes that are none of ours, and usage is the sum over our own processes instead.
    """

    def __init__(self, limit_override_mb: float | None) -> None:
        self.cgroup = own_cgroup()
        self.limit = self._read_limit(limit_override_mb)

    def _read_limit(self, override_mb: float | None) -> Reading:
        cgroup_bytes = self.cgroup.limit_bytes() if self.cgroup else None
        if cgroup_bytes is not None and (override_mb is None or cgroup_bytes / MB <= override_mb):
            assert self.cgroup is not None
            return Reading(cgroup_bytes / MB, f"cgroup v{self.cgroup.version}")
        if override_mb is not None:
            return Reading(override_mb, "MEMORY_LIMIT_MB")
        return Reading(DEFAULT_LIMIT_MB, "default")

    @property
    def from_cgroup(self) -> bool:
        return self.limit.source.startswith("cgroup")

    def usage(self, own_processes_mb: Callable[[], float]) -> Reading:
        if self.cgroup is not None and self.from_cgroup:
            return Reading(self.cgroup.working_set_bytes() / MB, "cgroup working set")
        return Reading(own_processes_mb(), "sum of process PSS")

    def breakdown_mb(self) -> dict[str, float] | None:
        """Anon, file and shmem of the container's cgroup, where the limit is the cgroup's."""
        if self.cgroup is None or not self.from_cgroup:
            return None
        try:
            return {key: round(mb, 1) for key, mb in self.cgroup.breakdown_mb().items()}
        except OSError:
            return None

    def oom_kills(self) -> int | None:
        """The container's own OOM-kill counter, where it has one."""
        if self.cgroup is None or not self.from_cgroup:
            return None
        return self.cgroup.oom_kills()
