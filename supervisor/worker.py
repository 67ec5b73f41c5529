"""One running worker as the supervisor tracks it, and how its whole tree is signalled."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from supervisor.kill import signal_tree
from supervisor.memory import Cgroup, process_tree
from supervisor.states import Reason


@dataclass
class RunningWorker:
    """Shared between the event loop and the watchdog thread; ``mark`` is the one contended write."""

    task_id: str
    kind: str
    attempt: int
    routing_id: bytes
    ceiling_mb: float
    reserved_mb: float
    timeout_s: float
    retriable: bool
    max_attempts: int
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    pid: int = 0  # 0 until the zygote has forked it
    started_mono: float = field(default_factory=time.monotonic)
    cgroup: Cgroup | None = None
    ready: bool = False
    ready_pid: int | None = None
    outcome: dict[str, Any] | None = None
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    kill_reason: Reason | None = None
    term_sent_mono: float | None = None
    sigkill_sent: bool = False
    exited: bool = False
    last_pids: list[int] = field(default_factory=list)
    growth_mb_s: float = 0.0
    _observed_mono: float | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.started_mono

    def started(self, pid: int) -> None:
        """The fork happened; deliver any kill that was recorded while it was under way."""
        self.pid = pid
        self.started_mono = time.monotonic()
        if self.kill_reason is not None:
            self.send_signal(signal.SIGKILL)

    def observe(self, rss_mb: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._observed_mono is not None and now > self._observed_mono:
            self.growth_mb_s = max(0.0, (rss_mb - self.rss_mb) / (now - self._observed_mono))
        self._observed_mono = now
        self.rss_mb = rss_mb
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb)

    def seconds_to_ceiling(self) -> float:
        """At the growth rate of the last two samples; infinite for a tree that is not growing."""
        if self.growth_mb_s <= 0:
            return float("inf")
        return max(0.0, self.ceiling_mb - self.rss_mb) / self.growth_mb_s

    def mark(self, reason: Reason) -> bool:
        """Record why the worker is being stopped, before any signal is sent; the first reason wins."""
        with self._lock:
            if self.kill_reason is not None:
                return False
            self.kill_reason = reason
            return True

    def kill(self, reason: Reason) -> None:
        """Record ``reason`` and SIGKILL the whole tree."""
        self.mark(reason)
        self.escalate()

    def terminate(self, reason: Reason) -> None:
        """Record ``reason`` and SIGTERM the tree; the watchdog sends SIGKILL after the grace period."""
        if self.mark(reason):
            self.term_sent_mono = time.monotonic()
            self.send_signal(signal.SIGTERM)

    def escalate(self) -> None:
        """SIGKILL the tree, whatever was sent before (the grace period after SIGTERM is over)."""
        self.sigkill_sent = True
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        """Signal the worker's process group and every process of its tree, even those that left it;
        nothing before the fork (``started`` delivers a kill recorded meanwhile)."""
        signal_tree(self.pid, self.tree_pids() if self.pid > 0 else [], sig)

    def cgroup_oom(self) -> bool:
        """Whether the kernel OOM-killed inside the worker's own cgroup: that is, at its ceiling."""
        if self.cgroup is None:
            return False
        try:
            return self.cgroup.oom_kills() > 0
        except OSError:
            return False

    def tree_pids(self) -> list[int]:
        if self.cgroup is not None:
            try:
                return self.cgroup.pids()
            except OSError:
                return []
        return process_tree(self.pid) if self.pid > 0 else []
