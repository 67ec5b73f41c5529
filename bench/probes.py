"""Memory read straight from /proc and the cgroup files (in MB), and the two threads that watch it
while a scenario runs: one on the zygote's children (enforcement), one on the container (survival)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.cgroup import LimitedCgroup
from supervisor.memory import PAGE_BYTES, own_cgroup
from workers.units import MB


def rollup_mb(pid: int) -> dict[str, float]:
    """RSS and PSS of one process from /proc/<pid>/smaps_rollup; empty if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.partition(":") for line in lines)
    return {
        f"{name.lower()}_mb": int(rest.split()[0]) / 1024
        for name, _, rest in fields
        if name in ("Rss", "Pss")
    }


def status_mb(pid: int | None, field: str) -> float | None:
    """A field of /proc/<pid>/status (VmRSS, VmHWM) in MB; None if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines() if pid else []
    except OSError:
        return None
    values = [line.split()[1] for line in lines if line.startswith(field + ":")]
    return round(int(values[0]) / 1024, 1) if values else None


def statm_rss_mb(pid: int) -> float | None:
    """Resident set from /proc/<pid>/statm (the cheapest read); None once the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES / MB
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    """Direct children of a (single-threaded) process."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _task_cgroup(pid: int) -> Path | None:
    """The v1 memory cgroup a worker moved itself into (named ``task-...``), or None."""
    group = own_cgroup(pid)
    if group is None or group.version != 1 or not group.path.name.startswith("task-"):
        return None
    return group.path


def _oom_kills(directory: Path) -> int:
    """The v1 cgroup's OOM-kill counter (0 if it cannot be read)."""
    try:
        fields = dict(line.split() for line in (directory / "memory.oom_control").read_text().splitlines())
        return int(fields.get("oom_kill", 0))
    except (OSError, ValueError):
        return 0


SAMPLER_PERIOD_S = (
    0.00025  # a short sleep, not a spin: on 2 cores a spinning sampler would starve the watchdog
)


@dataclass
class Track:
    """What the sampler saw of one worker; times are perf_counter seconds."""

    pid: int
    samples: int = 0
    max_rss_mb: float = 0.0
    cross_t: float | None = None  # first sample at or above the ceiling
    gone_t: float | None = None  # first sample with the process gone or its memory released
    cgroup: Path | None = None
    max_charged_mb: float | None = None  # the worker cgroup's memory.max_usage_in_bytes
    kernel_oom_kills: int = 0  # OOM kills the kernel counted in the worker's cgroup (the backstop acted)


class WorkerSampler(threading.Thread):
    """The zygote's children in a tight loop: RSS from statm, and what each worker's own cgroup was
    charged where it has one. Times enforcement."""

    def __init__(self, zygote_pid: int, ceiling_mb: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.zygote_pid = zygote_pid
        self.ceiling_mb = ceiling_mb
        self.tracks: dict[int, Track] = {}
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            now = time.perf_counter()
            for pid in _children(self.zygote_pid):
                self.tracks.setdefault(pid, Track(pid))
            for track in self.tracks.values():
                if track.gone_t is None:
                    self._sample(track, now)
            time.sleep(SAMPLER_PERIOD_S)

    def _sample(self, track: Track, now: float) -> None:
        rss_mb = statm_rss_mb(track.pid)
        if not rss_mb:  # a zombie's statm is all zeros: its memory is released
            track.gone_t = now
            return
        track.samples += 1
        track.max_rss_mb = max(track.max_rss_mb, rss_mb)
        if track.cross_t is None and rss_mb >= self.ceiling_mb:
            track.cross_t = now
        # The worker moves itself into its task cgroup right after the fork: follow it there.
        track.cgroup = track.cgroup or _task_cgroup(track.pid)
        if track.cgroup is not None:
            try:
                charged_mb = int((track.cgroup / "memory.max_usage_in_bytes").read_text()) / MB
            except (OSError, ValueError):
                return
            track.max_charged_mb = max(track.max_charged_mb or 0.0, charged_mb)
            track.kernel_oom_kills = max(track.kernel_oom_kills, _oom_kills(track.cgroup))

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


RECORDER_PERIOD_S = 0.1


class MemoryRecorder(threading.Thread):
    """Memory over time: the container's usage and (for memvisor) GET /admin/workers every ~100 ms.
    It doubles as a liveness probe: every failed or slow answer is counted."""

    def __init__(self, group: LimitedCgroup | None, admin: httpx.Client | None = None) -> None:
        super().__init__(name="bench-recorder", daemon=True)
        self.group = group
        self.admin = admin
        self.samples: list[dict[str, Any]] = []
        self.failures = 0
        self.slowest_s = 0.0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(RECORDER_PERIOD_S):
            sample: dict[str, Any] = {"t": time.time()}
            if self.group is not None:
                sample["usage_mb"] = round(int(self.group.read("memory.usage_in_bytes")) / MB, 1)
            if self.admin is not None:
                sample["workers"] = self._workers()
            self.samples.append(sample)

    def _workers(self) -> list[dict[str, Any]] | None:
        assert self.admin is not None
        started = time.monotonic()
        try:
            response = self.admin.get("/admin/workers", timeout=5)
            response.raise_for_status()
        except httpx.HTTPError:
            self.failures += 1
            return None
        finally:
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
        keep = ("pid", "task_id", "kind", "rss_mb", "ceiling_mb")
        return [{k: w[k] for k in keep} for w in response.json()]

    def stop(self) -> dict[str, Any]:
        """Stop; the probe's figures."""
        self._stopped.set()
        self.join(timeout=10)
        return {"probe_failures": self.failures, "probe_slowest_s": round(self.slowest_s, 3)}
