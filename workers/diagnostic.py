"""Diagnostic kinds for tests and benchmarks; registered only when ENABLE_DIAGNOSTIC_TASKS=true."""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from workers.registry import TaskContext, task_kind
from workers.units import MB

BURST_CHUNK_MB = 16


class SleepInput(BaseModel):
    seconds: float = Field(default=0.0, ge=0, le=3600)
    pad_kb: int = Field(default=0, ge=0, le=32768, description="padding added to the result, in KiB")


class AllocInput(BaseModel):
    mb: int = Field(ge=1, le=65536)
    rate_mb_s: float = Field(default=0.0, ge=0, description="0 allocates as fast as possible")
    hold_s: float = Field(default=0.0, ge=0, le=3600)


class RaiseInput(BaseModel):
    message: str = Field(default="diagnostic failure", max_length=1000)


class CrashInput(BaseModel):
    pass


class RecordInput(BaseModel):
    path: str = Field(min_length=1, max_length=4096, description="a file every execution appends to")
    seconds: float = Field(default=0.0, ge=0, le=3600)


class SpawnInput(BaseModel):
    children: int = Field(ge=1, le=16)
    mb_each: int = Field(ge=0, le=65536)
    hold_s: float = Field(default=1.0, ge=0, le=3600)


class InspectInput(BaseModel):
    read: list[str] = Field(default_factory=list, max_length=16, description="paths to try to read")
    write: list[str] = Field(default_factory=list, max_length=16, description="files to try to create")
    connect: list[str] = Field(default_factory=list, max_length=16, description="host:port to try")
    hold_s: float = Field(default=0.0, ge=0, le=600, description="then wait, to be inspected")


@task_kind(
    "diag.sleep", input_model=SleepInput, estimate_mb=40, ceiling_mb=128, timeout_s=3600, retriable=True
)
def sleep(payload: SleepInput, ctx: TaskContext) -> dict[str, Any]:
    """Sleep for a while; zero seconds makes a no-op task for dispatch measurements."""
    if payload.seconds:
        time.sleep(payload.seconds)
    if payload.pad_kb:
        return {"slept_s": payload.seconds, "pad": "x" * (payload.pad_kb * 1024)}
    return {"slept_s": payload.seconds}


@task_kind(
    "diag.record", input_model=RecordInput, estimate_mb=40, ceiling_mb=128, timeout_s=3600, retriable=True
)
def record(payload: RecordInput, ctx: TaskContext) -> dict[str, Any]:
    """Append one line (task id, pid) to ``path`` as it starts, then sleep: proves how often a task ran."""
    line = f"{ctx.task_id} {os.getpid()}\n"
    fd = os.open(payload.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines from concurrent workers never mix
    finally:
        os.close(fd)
    if payload.seconds:
        time.sleep(payload.seconds)
    return {"pid": os.getpid()}


@task_kind("diag.alloc", input_model=AllocInput, estimate_mb=64, ceiling_mb=256, timeout_s=3600)
def alloc(payload: AllocInput, ctx: TaskContext) -> dict[str, Any]:
    """Allocate and touch ``mb`` MB at ``rate_mb_s``, then hold it for ``hold_s``."""
    held = _allocate(payload.mb, payload.rate_mb_s, ctx)
    time.sleep(payload.hold_s)
    return {"allocated_mb": sum(len(chunk) for chunk in held) // MB}


@task_kind("diag.raise", input_model=RaiseInput, estimate_mb=40, ceiling_mb=128, timeout_s=60)
def fail(payload: RaiseInput, ctx: TaskContext) -> dict[str, Any]:
    """Raise an exception with the given message."""
    raise RuntimeError(payload.message)


@task_kind("diag.crash", input_model=CrashInput, estimate_mb=40, ceiling_mb=128, timeout_s=60)
def crash(payload: CrashInput, ctx: TaskContext) -> dict[str, Any]:
    """Die of a segmentation fault."""
    ctypes.string_at(0)
    return {}


@task_kind("diag.spawn", input_model=SpawnInput, estimate_mb=64, ceiling_mb=256, timeout_s=3600)
def spawn(payload: SpawnInput, ctx: TaskContext) -> dict[str, Any]:
    """Start grandchildren that each allocate ``mb_each`` MB and hold it; wait for them."""
    code = _CHILD_CODE.format(mb=payload.mb_each, hold_s=payload.hold_s)
    children = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(payload.children)]
    codes = [child.wait() for child in children]
    return {"children": len(children), "exit_codes": codes}


@task_kind("diag.inspect", input_model=InspectInput, estimate_mb=40, ceiling_mb=128, timeout_s=660)
def inspect(payload: InspectInput, ctx: TaskContext) -> dict[str, Any]:
    """Report this worker's identity and protections; try the reads, writes and connections asked."""
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    own = ctx.spool_dir / "inspect-probe"
    report = {
        "pid": os.getpid(),
        "uid": list(os.getresuid()),
        "gid": list(os.getresgid()),
        "groups": os.getgroups(),
        "environ": dict(os.environ),
        "proc_environ": _proc_environ(),
        "status": {k: status.get(k, "").strip() for k in ("NoNewPrivs", "Seccomp", "CapEff", "CapPrm")},
        "core_limit": list(resource.getrlimit(resource.RLIMIT_CORE)),
        "fds": _open_fds(),
        "read": {path: _attempt(lambda p=path: Path(p).read_bytes()[:0]) for path in payload.read},
        "write": {path: _attempt(lambda p=path: Path(p).write_text("x")) for path in payload.write},
        "write_own": _attempt(lambda: own.write_text("x")),
        "connect": {target: _attempt(lambda t=target: _connect(t)) for target in payload.connect},
    }
    time.sleep(payload.hold_s)
    return report


def _proc_environ() -> list[str] | str:
    """The environment the process was started with; a worker that changed uid may not read it."""
    try:
        return Path("/proc/self/environ").read_bytes().decode(errors="replace").split("\0")
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror}"


def _attempt(action: Any) -> str:
    try:
        action()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return "ok"


def _connect(target: str) -> None:
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5):
        pass


def _open_fds() -> list[dict[str, Any]]:
    """Each open descriptor with what it points at; sockets with their address family."""
    fds = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor listdir itself used, closed since
        entry: dict[str, Any] = {"fd": int(name), "target": target}
        if target.startswith("socket:"):
            with socket.socket(fileno=os.dup(int(name))) as sock:
                entry["family"] = sock.family.name
        fds.append(entry)
    return fds


def _allocate(mb: int, rate_mb_s: float, ctx: TaskContext) -> list[bytearray]:
    """Touch every page (bytearray fills with the byte) so that the memory is really resident."""
    chunk_mb = 1 if rate_mb_s else BURST_CHUNK_MB
    held: list[bytearray] = []
    start = time.monotonic()
    while len(held) * chunk_mb < mb:
        held.append(bytearray(b"\x01") * (min(chunk_mb, mb - len(held) * chunk_mb) * MB))
        if rate_mb_s:
            ahead_s = len(held) * chunk_mb / rate_mb_s - (time.monotonic() - start)
            if ahead_s > 0:
                time.sleep(ahead_s)
    ctx.progress("allocated", mb=mb)
    return held


# Grandchildren ask to die with their parent so that a killed worker never leaves them running.
_CHILD_CODE = """
import ctypes, signal, time
ctypes.CDLL(None).prctl(1, signal.SIGKILL)
block = bytearray(b"\\x01") * ({mb} * 1024 * 1024)
time.sleep({hold_s})
"""
