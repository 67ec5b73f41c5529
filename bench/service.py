"""The real service and the 512 MB containers it runs in (harness/cgroup.py), for the scenarios."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.cgroup import LimitedCgroup, Mode, make_cgroup, make_mode
from harness.server import Server, marked_pids, until
from workers.units import MB

CONTAINER_LIMIT_MB = 512
STOP_TIMEOUT_S = 40


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextmanager
def container(limit_mb: int = CONTAINER_LIMIT_MB) -> Iterator[LimitedCgroup | str]:
    """A fresh memory cgroup limited to ``limit_mb``, or the reason none can be made here."""
    group = make_cgroup(limit_mb)
    try:
        yield group
    finally:
        if isinstance(group, LimitedCgroup):
            _empty(group)
            with contextlib.suppress(OSError):
                group.remove()


@contextmanager
def in_mode(name: str, base_dir: Path) -> Iterator[Mode | str]:
    """The 512 MB container in ``lab`` or ``render`` mode (``make_mode``), or why none can be made."""
    mode = make_mode(name, base_dir)
    try:
        yield mode
    finally:
        if isinstance(mode, Mode):
            _empty(mode.group)
            with contextlib.suppress(OSError):
                mode.close()


def _empty(group: LimitedCgroup) -> None:
    """Kill whatever is still inside the group (and its child groups) so that it can be removed."""
    for path in [group.path, *(p for p in group.path.rglob("*") if p.is_dir())]:
        with contextlib.suppress(OSError):
            for pid in (path / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.2)


def wrap_of(group: LimitedCgroup | Mode | str) -> list[str] | None:
    return None if isinstance(group, str) else group.wrap()


@contextmanager
def server(
    data_dir: Path,
    group: LimitedCgroup | Mode | str,
    env: dict[str, str] | None = None,
    wrap: list[str] | None = None,
) -> Iterator[Server]:
    """The service started as ``python -m api`` (inside ``group`` when there is one, as a mode's uid
    and in its data directory when ``group`` is a ``Mode``, or through ``wrap``), stopped after."""
    env = {"LOG_LEVEL": "warning", **(env or {})}
    if isinstance(group, Mode):
        data_dir, env = group.data_dir, {**group.env, **env}
    srv = Server(data_dir, env=env, wrap=wrap or wrap_of(group))
    try:
        srv.start(ready_timeout_s=60)
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


def reset_peak(group: LimitedCgroup | str) -> int | None:
    """Reset the container's peak usage (v1 allows writing 0); its OOM-kill count so far."""
    if not isinstance(group, LimitedCgroup):
        return None
    (group.path / "memory.max_usage_in_bytes").write_text("0")
    return group.oom_kills


def container_figures(group: LimitedCgroup | str, ooms_before: int | None) -> dict[str, Any]:
    """OOM kills since ``reset_peak`` and the peak usage, in MB."""
    if not isinstance(group, LimitedCgroup) or ooms_before is None:
        return {"container": group, "container_oom_kills": None, "container_max_usage_mb": None}
    return {
        "container": f"{group.limit_mb} MB cgroup {group.path.name}",
        "limit_mb": group.limit_mb,
        "container_oom_kills": group.oom_kills - ooms_before,
        "container_max_usage_mb": round(int(group.read("memory.max_usage_in_bytes")) / MB, 1),
    }


def wait_idle(srv: Server, timeout_s: float = 60) -> None:
    until(lambda: not srv.admin.get("/admin/workers").json(), timeout_s, "no running worker")


def kinds(srv: Server) -> dict[str, dict[str, Any]]:
    """Kinds the service offers and has enabled, by name."""
    listed: list[dict[str, Any]] = srv.client.get("/v1/kinds").json()
    return {kind["name"]: kind for kind in listed if kind.get("enabled", True)}


def run_child(cmd: list[str], group: LimitedCgroup | str, timeout_s: float, cwd: Path) -> str:
    """Run a command (inside ``group`` when there is one); its stdout, or RuntimeError with its stderr."""
    full = [*(wrap_of(group) or []), *cmd]
    done = subprocess.run(full, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout
