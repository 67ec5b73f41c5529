"""The CPU quota this process runs under, read from its cgroups: one reader for the supervisor's
report and the workers' thread pools alike (a 0.5-CPU Render instance must not start two threads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota over our cgroup and its ancestors (v1 cfs_quota_us, v2 cpu.max)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        names = controllers.split(",")
        if "cpu" in names:
            mount = next((root / n for n in (controllers, "cpu", "cpu,cpuacct") if (root / n).is_dir()), None)
            if mount is not None:
                quotas += _walk(mount / rel.lstrip("/"), mount, _v1_quota)
        elif controllers == "":
            quotas += _walk(root / rel.lstrip("/"), root, _v2_quota)
    return min(quotas) if quotas else None


def _walk(path: Path, top: Path, read: Any) -> list[float]:
    found = []
    for directory in [path, *path.parents]:
        if not directory.is_relative_to(top):
            break
        quota = read(directory)
        if quota is not None:
            found.append(quota)
    return found


def _v1_quota(directory: Path) -> float | None:
    try:
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def whole_cpus(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT) -> int | None:
    """The quota in whole CPUs (at least one); None when unlimited."""
    quota = cpu_quota(proc_cgroup, root)
    return None if quota is None else max(1, int(quota))
