"""Reading memory: the container's limit and working set from its cgroup, processes' RSS from /proc.

psutil reads processes; psutil.virtual_memory() describes the host, not the container, and is never
used for decisions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from workers.units import MB  # bench/ reads it here too

UNLIMITED_BYTES = 1 << 60  # cgroup v1 reports "no limit" as a page-rounded LONG_MAX
CGROUP_ROOT = Path("/sys/fs/cgroup")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Cgroup:
    """A memory cgroup directory and its interface version (1 or 2)."""

    version: int
    path: Path
    root: Path = CGROUP_ROOT  # where the hierarchy is mounted: limits are read up to it

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def stat(self) -> dict[str, int]:
        stat: dict[str, int] = {}
        for line in self.read("memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if value.isdigit():
                stat[key] = int(value)
        return stat

    def limit_bytes(self) -> int | None:
        """The effective limit, taking every ancestor's limit into account."""
        if self.version == 1:
            limit = self.stat().get("hierarchical_memory_limit", UNLIMITED_BYTES)
            return None if limit >= UNLIMITED_BYTES else limit
        limits = [_v2_max(p) for p in [self.path, *self.path.parents] if p.is_relative_to(self.root)]
        known = [limit for limit in limits if limit is not None]
        return min(known) if known else None

    def working_set_bytes(self) -> int:
        """Usage minus inactive file cache: what the kernel cannot simply drop (as kubelet counts)."""
        stat = self.stat()
        if self.version == 1:
            usage = int(self.read("memory.usage_in_bytes"))
            return max(0, usage - stat.get("total_inactive_file", 0))
        usage = int(self.read("memory.current"))
        return max(0, usage - stat.get("inactive_file", 0))

    def unreclaimable_bytes(self) -> int:
        """Usage minus the page cache the kernel can drop (shmem stays: tmpfs cannot be reclaimed
        without swap). What the budget's base is read from: it does not move with cached files."""
        breakdown = self.breakdown_mb()
        usage = int(self.read("memory.usage_in_bytes" if self.version == 1 else "memory.current"))
        reclaimable = (breakdown["file"] - breakdown["shmem"]) * MB
        return max(0, int(usage - max(0.0, reclaimable)))

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return self.counters(name).get("oom_kill", 0)

    def counters(self, name: str) -> dict[str, int]:
        """A flat-keyed file (memory.events, memory.oom_control) as a dict."""
        counters: dict[str, int] = {}
        for line in self.read(name).splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                counters[key] = int(value)
        return counters

    def oom_group(self) -> bool | None:
        """memory.oom.group (v2): whether one OOM kill takes every process of the group; None on v1."""
        if self.version != 2:
            return None
        try:
            return self.read("memory.oom.group").strip() == "1"
        except OSError:
            return None

    def breakdown_mb(self) -> dict[str, float]:
        """Anonymous memory, page cache, and shmem (tmpfs such as /dev/shm: counted in usage, and
        not reclaimable without swap), from memory.stat; v1 names them total_*."""
        stat = self.stat()
        prefix = "total_" if self.version == 1 else ""
        names = {
            "anon": "rss" if self.version == 1 else "anon",
            "file": "cache" if self.version == 1 else "file",
        }
        names["shmem"] = "shmem"
        return {key: stat.get(prefix + name, 0) / MB for key, name in names.items()}

    def pids(self) -> list[int]:
        return [int(line) for line in self.read("cgroup.procs").split()]


def _v2_max(path: Path) -> int | None:
    try:
        text = (path / "memory.max").read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def own_cgroup(
    pid: int | str = "self", root: Path = CGROUP_ROOT, proc: Path = Path("/proc")
) -> Cgroup | None:
    """The memory cgroup of a process, or None where none is readable."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            path = root / "memory" / rel.lstrip("/")
            if (path / "memory.usage_in_bytes").exists():
                return Cgroup(1, path, root / "memory")
    for line in lines:
        if line.startswith("0::"):
            path = root / line[3:].lstrip("/")
            if (path / "memory.current").exists():
                return Cgroup(2, path, root)
    return None


# The watchdog reads RSS and the process tree every few milliseconds, so those two read /proc
# directly: measured here, statm costs 0.02 ms against 0.26 ms for psutil's memory_info(), and one
# scan of /proc/*/stat 3 ms against 38 ms for process_iter(["ppid"]). PSS, read a few times a second,
# goes through psutil.


def rss_bytes(pid: int) -> int:
    """Resident set of one process; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def rss_mb(pids: Iterable[int]) -> float:
    return sum(rss_bytes(pid) for pid in pids) / MB


def private_bytes(pid: int) -> int:
    """Anonymous plus shared-memory (tmpfs, memfd) resident pages of one process; 0 if it is gone.

    What the kernel cannot reclaim without swap. File-backed pages (program text, mapped files) are
    page cache the kernel charges once however many processes map them, and can drop under pressure.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read()
        start = status.index(b"RssAnon:")
    except (OSError, ValueError):
        return 0
    anon, _file, shmem = (int(line.split()[1]) for line in status[start:].split(b"\n", 3)[:3])
    return (anon + shmem) * 1024


def tree_mb(root: int, pids: Iterable[int]) -> float:
    """A worker tree's memory: the worker's own RSS plus its descendants' private pages.

    Summing RSS over a tree counts shared program text once per process: a Chromium tree maps its
    ~250 MB binary in every process, and the sum read 1,079 MB for a page whose processes the kernel
    charged 261 MB. A worker's own RSS is kept whole, so a one-process tree reads as it always did.
    """
    return sum(rss_bytes(pid) if pid == root else private_bytes(pid) for pid in pids) / MB


def pss_bytes(pid: int) -> int:
    """Proportional set: pages shared with the zygote are split between sharers, not counted in each."""
    try:
        return int(psutil.Process(pid).memory_full_info().pss)
    except psutil.Error:
        return 0


def pss_mb(pids: Iterable[int]) -> float:
    return sum(pss_bytes(pid) for pid in pids) / MB


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, from each thread's /proc children list.

    The watchdog walks each worker's tree every few milliseconds: this reads a file per thread of
    the tree, where a scan of /proc reads one per process on the machine (measured at 0.5 CPU: the
    full scan made the watchdog's rounds cost 2.4 ms each with 134 processes in /proc).
    """
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        tree.append(pid)
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                    stack.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                continue
    return tree
