"""A thread that watches the zygote's children in a tight loop: RSS from /proc/<pid>/statm, and the
memory charged to each worker's own cgroup where it has one. Used to time enforcement."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procmem import cgroup_bytes, children, memory_cgroup_dir, oom_kills, statm_rss_mb
from workers.units import MB

PERIOD_S = 0.00025  # a short sleep, not a spin: on 2 cores a spinning sampler would starve the watchdog


@dataclass
class Track:
    """What the sampler saw of one worker; times are perf_counter seconds."""

    pid: int
    first_seen_t: float
    samples: int = 0
    max_rss_mb: float = 0.0
    cross_t: float | None = None  # first sample at or above the ceiling
    gone_t: float | None = None  # first sample with the process gone or its memory released
    last_t: float = 0.0
    cgroup: Path | None = None
    max_charged_mb: float | None = None  # the worker cgroup's memory.max_usage_in_bytes
    kernel_oom_kills: int = 0  # OOM kills the kernel counted in the worker's cgroup (the backstop acted)


class WorkerSampler(threading.Thread):
    def __init__(self, zygote_pid: int, ceiling_mb: float) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.zygote_pid = zygote_pid
        self.ceiling_mb = ceiling_mb
        self.tracks: dict[int, Track] = {}
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            now = time.perf_counter()
            for pid in children(self.zygote_pid):
                self.tracks.setdefault(pid, Track(pid, now))
            for track in self.tracks.values():
                if track.gone_t is None:
                    self._sample(track, now)
            time.sleep(PERIOD_S)

    def _sample(self, track: Track, now: float) -> None:
        rss_mb = statm_rss_mb(track.pid)
        if rss_mb is None or rss_mb == 0:  # a zombie's statm is all zeros: its memory is released
            track.gone_t = now
            return
        track.samples += 1
        track.last_t = now
        track.max_rss_mb = max(track.max_rss_mb, rss_mb)
        if track.cross_t is None and rss_mb >= self.ceiling_mb:
            track.cross_t = now
        self._sample_cgroup(track)

    def _sample_cgroup(self, track: Track) -> None:
        """The worker moves itself into its task cgroup right after the fork: follow it there."""
        if track.cgroup is None or not track.cgroup.name.startswith("task-"):
            track.cgroup = memory_cgroup_dir(track.pid)
        if track.cgroup is not None and track.cgroup.name.startswith("task-"):
            charged = cgroup_bytes(track.cgroup, "memory.max_usage_in_bytes")
            if charged is not None:
                track.max_charged_mb = max(track.max_charged_mb or 0.0, charged / MB)
            track.kernel_oom_kills = max(track.kernel_oom_kills, oom_kills(track.cgroup))

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
