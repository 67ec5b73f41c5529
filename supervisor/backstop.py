"""Which kernel backstop this container allows: a memory cgroup per worker in a writable cgroup v1
hierarchy (as root), in a delegated cgroup v2 subtree (rootless podman, a systemd user slice, a
writable cgroupns mount), or none (Render: /sys/fs/cgroup read-only), where the watchdog, RLIMIT_DATA
and ceiling reservations enforce alone.

The choice is a pure function of what the cgroup files say (``choose``); ``facts`` reads them and
``open_backstop`` acts on the choice.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from supervisor.cgroups import WorkerCgroups
from supervisor.cgroups_v2 import DelegatedCgroups
from supervisor.memory import CGROUP_ROOT, Cgroup, own_cgroup

log = logging.getLogger(__name__)


class Backstop(StrEnum):
    V1 = "cgroup v1"
    V2_DELEGATED = "cgroup v2 delegated"
    NONE = "none"


@dataclass(frozen=True)
class CgroupFacts:
    version: int | None  # of the memory cgroup we are in; None: none readable
    writable: bool  # our cgroup's directory: may we create child groups in it
    memory_delegable: bool  # v2: "memory" in our cgroup.controllers (it may be enabled below us)
    delegated: bool  # v2: cgroup.procs and cgroup.subtree_control are ours to write


def choose(facts: CgroupFacts) -> tuple[Backstop, str]:
    """The backstop to use, and why (the reason is logged at boot)."""
    if facts.version is None:
        return Backstop.NONE, "no memory cgroup readable"
    if not facts.writable:
        return Backstop.NONE, f"cgroup v{facts.version} is read-only"
    if facts.version == 1:
        return Backstop.V1, "cgroup v1 memory hierarchy writable"
    if not facts.memory_delegable:
        return Backstop.NONE, "cgroup v2: the memory controller is not available to our subtree"
    if not facts.delegated:
        return Backstop.NONE, "cgroup v2: cgroup.procs or cgroup.subtree_control not writable"
    return Backstop.V2_DELEGATED, "cgroup v2 subtree delegated to us"


def facts(cgroup: Cgroup | None) -> CgroupFacts:
    if cgroup is None:
        return CgroupFacts(None, False, False, False)
    path = cgroup.path
    try:
        delegable = "memory" in (path / "cgroup.controllers").read_text().split()
    except OSError:
        delegable = False
    files = ("cgroup.procs", "cgroup.subtree_control")
    return CgroupFacts(
        version=cgroup.version,
        writable=os.access(path, os.W_OK),
        memory_delegable=delegable,
        delegated=all(os.access(path / name, os.W_OK) for name in files),
    )


def open_backstop(root: Path = CGROUP_ROOT, proc: Path = Path("/proc")) -> WorkerCgroups | None:
    """The worker cgroups this container allows, or None."""
    cgroup = own_cgroup(root=root, proc=proc)
    backstop, why = choose(facts(cgroup))
    log.info("kernel backstop: %s (%s)", backstop, why)
    if backstop is Backstop.V1:
        return WorkerCgroups.open()
    if backstop is Backstop.V2_DELEGATED and cgroup is not None:
        return DelegatedCgroups.open_in(cgroup)
    return None
