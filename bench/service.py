"""The real service and the 512 MB containers it runs in (harness/cgroup.py), for the scenarios."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cgroup import LimitedCgroup, Mode, make_cgroup, make_mode
from harness.server import Server, marked_pids, until

CONTAINER_LIMIT_MB = 512
STOP_TIMEOUT_S = 40


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Box:
    """A fresh 512 MB memory cgroup (in a harness ``Mode`` for lab and Render mode), or the reason
    none could be made here: then the scenario runs without one and its container figures are None."""

    group: LimitedCgroup | None
    why_not: str = ""
    mode: Mode | None = None
    ooms_before: int | None = None

    def wrap(self) -> list[str]:
        return self.group.wrap() if self.group else []

    def describe(self) -> str:
        if self.group is None:
            return self.why_not
        return f"{self.group.limit_mb} MB cgroup {self.group.path.name}" + (
            f", {self.mode.name} mode" if self.mode else ""
        )

    def reset_peak(self) -> None:
        """Start counting: the peak usage back to 0 (v1 allows the write), the OOM kills so far."""
        if self.group is not None:
            (self.group.path / "memory.max_usage_in_bytes").write_text("0")
            self.ooms_before = self.group.oom_kills

    def oom_kills(self) -> int | None:
        if self.group is None or self.ooms_before is None:
            return None
        return self.group.oom_kills - self.ooms_before

    def figures(self) -> dict[str, Any]:
        """OOM kills since ``reset_peak`` and the peak usage, in MB."""
        peak_mb = round(self.group.max_usage_mb, 1) if self.group else None
        limit_mb = self.group.limit_mb if self.group else None
        return {
            "container": self.describe(),
            "limit_mb": limit_mb,
            "container_oom_kills": self.oom_kills(),
            "container_max_usage_mb": peak_mb,
        }


@contextmanager
def container(
    mode: str | None = None,
    base_dir: Path | None = None,
    limit_mb: int = CONTAINER_LIMIT_MB,
    cpu_quota_us: int | None = None,
) -> Iterator[Box]:
    """A fresh container of ``limit_mb`` (under a CFS quota of ``cpu_quota_us`` per 100 ms if given);
    in ``lab`` or ``render`` mode (harness ``make_mode``, with its data directory under ``base_dir``)
    when ``mode`` is given. Whatever is left inside is killed after."""
    if mode:
        made: Mode | LimitedCgroup | str = make_mode(mode, base_dir or Path("."), limit_mb)
    else:
        made = make_cgroup(limit_mb, cpu_quota_us)
    if isinstance(made, str):
        yield Box(None, made)
        return
    box = Box(made.group, mode=made) if isinstance(made, Mode) else Box(made)
    try:
        yield box
    finally:
        assert box.group is not None
        _empty(box.group)
        with contextlib.suppress(OSError):
            made.close() if isinstance(made, Mode) else made.remove()


def _empty(group: LimitedCgroup) -> None:
    """Kill whatever is still inside the group (and its child groups) so that it can be removed."""
    for path in [group.path, *(p for p in group.path.rglob("*") if p.is_dir())]:
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)


@contextmanager
def server(data_dir: Path, box: Box | None = None, env: dict[str, str] | None = None) -> Iterator[Server]:
    """The service started as ``python -m api`` inside ``box`` if given (as its mode's uid and in its
    data directory when it has one); once its zygote is up (an ``api`` instance has none); stopped after."""
    env = {"LOG_LEVEL": "warning", **(env or {})}
    if box is not None and box.mode is not None:
        data_dir, env = box.mode.data_dir, {**box.mode.env, **env}
    srv = Server(data_dir, env=env, wrap=box.wrap() if box else None)
    try:
        srv.start(ready_timeout_s=60)
        if env.get("ROLE") != "api":
            until(srv.zygote_pid, 60, "the zygote")
        yield srv
    finally:
        try:
            srv.stop(STOP_TIMEOUT_S)
        except AssertionError as exc:
            log(f"server did not stop cleanly: {str(exc)[:200]}")
        for pid in marked_pids(srv.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        srv.close()


def wait_idle(srv: Server, timeout_s: float = 60) -> None:
    until(lambda: not srv.admin.get("/admin/workers").json(), timeout_s, "no running worker")


def kinds(srv: Server) -> set[str]:
    """The kinds the service offers and has enabled."""
    listed: list[dict[str, Any]] = srv.client.get("/v1/kinds").json()
    return {kind["name"] for kind in listed if kind.get("enabled", True)}


def run_task(
    srv: Server, kind: str, payload: dict[str, Any], timeout_s: float = 300, **fields: Any
) -> dict[str, Any]:
    """Submit a task and wait until it is final; its last state."""
    return srv.wait(srv.submit(kind, payload, **fields)["id"], timeout_s)


def run_child(cmd: list[str], box: Box | None, timeout_s: float, cwd: Path) -> Any:
    """Run a command (inside ``box`` when there is one); the JSON of its last line of stdout, or
    RuntimeError with its stderr."""
    full = [*(box.wrap() if box else []), *cmd]
    done = subprocess.run(full, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} exited {done.returncode}: {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else None
