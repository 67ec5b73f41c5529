"""What memory enforcement this container allows, said once at boot and in /admin/memory.

On Render the service runs as an unprivileged uid with /sys/fs/cgroup read-only, on half a CPU, and
Kubernetes sets memory.oom.group=1: one OOM kill restarts the instance. What is left to enforce
ceilings then is the watchdog, RLIMIT_DATA in each worker, and admission that reserves ceilings.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from supervisor.config import SupervisorSettings
from supervisor.memory import Cgroup
from workers.cpu import cpu_quota


@dataclass(frozen=True)
class Enforcement:
    cgroup_version: int | None  # of the memory controller we are in; None: none readable
    cgroup_writable: bool  # whether our own memory cgroup's directory may be written
    worker_cgroups: bool  # a pool cgroup and one per worker: the kernel backstop
    oom_group: bool | None  # memory.oom.group (v2 only): any OOM kill takes every process
    uid: int
    rlimit_data: bool
    data_limit_slack_mb: float
    cpu_quota: float | None  # CPUs; None: no quota

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.line()}

    def line(self) -> str:
        version = f"v{self.cgroup_version}" if self.cgroup_version else "none"
        oom_group = {None: "n/a", True: "1", False: "0"}[self.oom_group]
        cpus = "none" if self.cpu_quota is None else f"{self.cpu_quota:g} CPU"
        backstop = "on" if self.worker_cgroups else "off (watchdog, RLIMIT_DATA, ceiling reservations)"
        data = f"on (+{self.data_limit_slack_mb:g} MB slack)" if self.rlimit_data else "off"
        return (
            f"memory enforcement: cgroup {version} ({'writable' if self.cgroup_writable else 'read-only'}), "
            f"oom.group {oom_group}, uid {self.uid}, worker cgroups {backstop}, RLIMIT_DATA {data}, "
            f"CPU quota {cpus}"
        )


def detect(cgroup: Cgroup | None, worker_cgroups: bool, settings: SupervisorSettings) -> Enforcement:
    return Enforcement(
        cgroup_version=cgroup.version if cgroup else None,
        cgroup_writable=bool(cgroup and os.access(cgroup.path, os.W_OK)),
        worker_cgroups=worker_cgroups,
        oom_group=cgroup.oom_group() if cgroup else None,
        uid=os.getuid(),
        rlimit_data=settings.worker_data_limit,
        data_limit_slack_mb=settings.data_limit_slack_mb,
        cpu_quota=cpu_quota(),
    )


def task_limits(
    settings: SupervisorSettings, ceiling_mb: float, data_limit: bool = True, slack_mb: float | None = None
) -> dict[str, float | None]:
    """What the worker limits itself to when it takes its task (workers/limits.py): ``data_limit``
    False for a kind exempt from RLIMIT_DATA, ``slack_mb`` a kind's own slack (else the setting's)."""
    if not (settings.worker_data_limit and data_limit):
        return {"ceiling_mb": ceiling_mb, "data_slack_mb": None}
    slack_mb = (
        settings.data_limit_slack_mb if slack_mb is None else max(slack_mb, settings.data_limit_slack_mb)
    )
    return {"ceiling_mb": ceiling_mb, "data_slack_mb": slack_mb}
