"""Memory of processes and cgroups, read straight from /proc and the cgroup files (in MB)."""

from __future__ import annotations

from pathlib import Path

from supervisor.memory import PAGE_BYTES, own_cgroup
from workers.units import MB


def rollup_mb(pid: int) -> dict[str, float]:
    """RSS and PSS of one process from /proc/<pid>/smaps_rollup; empty if it is gone."""
    fields: dict[str, float] = {}
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return fields
    for line in lines:
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
            fields[f"{name.lower()}_mb"] = int(rest.split()[0]) / 1024
    return fields


def statm_rss_mb(pid: int) -> float | None:
    """Resident set from /proc/<pid>/statm (the cheapest read); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES / MB
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """Direct children of a (single-threaded) process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def memory_cgroup_dir(pid: int) -> Path | None:
    """The v1 memory cgroup directory a process is in, or None."""
    group = own_cgroup(pid)
    return group.path if group is not None and group.version == 1 else None


def cgroup_bytes(directory: Path, name: str) -> int | None:
    try:
        return int((directory / name).read_text())
    except (OSError, ValueError):
        return None


def oom_kills(directory: Path) -> int:
    """The v1 cgroup's OOM-kill counter (0 if it cannot be read)."""
    try:
        for line in (directory / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
