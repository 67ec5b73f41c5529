"""The supervisor's handle on the zygote process (see workers/zygote.py for the other side).

The zygote is started with ``subprocess`` (fork+exec: safe from a threaded process), handed one end
of a Unix socket pair, and driven with JSON lines. Fork replies and exit reports come back on the
same stream, in order, so a worker's exit can never be seen before its birth.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.errors import ZygoteLostError
from workers.units import MB

log = logging.getLogger(__name__)

# glibc's per-thread arenas would only fragment the workers' heaps; bytecode caches are written once
# at install time, not by every worker.
CHILD_ENV = {"MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}
START_TIMEOUT_S = 60.0
FORK_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Exit:
    exit_code: int | None  # -N for death by signal N; None if the zygote died first
    maxrss_mb: float  # the kernel's high-water mark of the worker process itself
    zygote_lost: bool = False


@dataclass
class WorkerProcess:
    pid: int
    exited: asyncio.Future[Exit] = field(repr=False)


class Zygote:
    def __init__(self, preload: tuple[str, ...], env: dict[str, str], sandbox: str) -> None:
        self.preload = preload
        self.env = env  # allow-listed: no secret of the service (supervisor/privileges.py)
        self.sandbox = sandbox  # the workers' policy, JSON (workers/sandbox.py)
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._pending: dict[int, asyncio.Future[WorkerProcess]] = {}
        self._workers: dict[int, WorkerProcess] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None else []

    def alive(self) -> bool:
        return (
            self._proc is not None
            and self._proc.poll() is None
            and self._reader_task is not None
            and not self._reader_task.done()
        )

    async def start(self, cgroup_procs: Path | None = None) -> None:
        """Start the zygote and wait until it has imported everything and says it is ready;
        ``cgroup_procs``: the cgroup it joins before its imports (the workers' pool)."""
        await self.stop()
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", "workers.zygote", "--fd", str(theirs.fileno())]
        cmd += ["--preload", ",".join(self.preload), "--sandbox", self.sandbox]
        if cgroup_procs is not None:
            cmd += ["--cgroup-procs", str(cgroup_procs)]
        # close_fds (the default) with pass_fds: the API's descriptors stay in the API.
        self._proc = subprocess.Popen(
            cmd, pass_fds=[theirs.fileno()], close_fds=True, env={**self.env, **CHILD_ENV}
        )
        theirs.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours)
        try:
            ready = json.loads(await asyncio.wait_for(reader.readline(), START_TIMEOUT_S) or b"{}")
        except (TimeoutError, ValueError) as exc:
            raise ZygoteLostError(f"zygote did not start: {exc!r}") from exc
        if ready.get("op") != "ready":
            raise ZygoteLostError(f"zygote did not start (exit code {self._proc.poll()})")
        self._reader_task = asyncio.create_task(self._read(reader), name="zygote-reader")
        log.info("zygote ready, pid %d", self._proc.pid)

    async def fork(
        self,
        task_id: str,
        attempt: int,
        endpoint: str,
        threads: int,
        cgroup: str | None,
        *,
        spare: bool = False,
        network: bool = True,
    ) -> WorkerProcess:
        if not self.alive() or self._writer is None:
            raise ZygoteLostError("the zygote is not running")
        seq = next(self._seq)
        future: asyncio.Future[WorkerProcess] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        request = {
            "op": "fork",
            "seq": seq,
            "task_id": task_id,
            "attempt": attempt,
            "endpoint": endpoint,
            "threads": threads,
            "cgroup": cgroup,
            "spare": spare,
            "network": network,
        }
        self._writer.write(json.dumps(request).encode() + b"\n")
        try:
            return await asyncio.wait_for(future, FORK_TIMEOUT_S)
        finally:
            self._pending.pop(seq, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                self._dispatch(json.loads(line))
        except (ConnectionError, ValueError) as exc:
            log.error("zygote stream broken: %s", exc)
        finally:
            self._lose_everything()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "forked":
            process = WorkerProcess(msg["pid"], asyncio.get_running_loop().create_future())
            self._workers[process.pid] = process
            future = self._pending.get(msg["seq"])
            if future is not None and not future.done():
                future.set_result(process)
        elif msg.get("op") == "exit":
            gone = self._workers.pop(msg["pid"], None)
            if gone is not None and not gone.exited.done():
                gone.exited.set_result(Exit(msg["exit_code"], msg["maxrss_kb"] * 1024 / MB))

    def _lose_everything(self) -> None:
        """The zygote is gone: its workers died with it (PDEATHSIG) and will never be reported."""
        for process in self._workers.values():
            if not process.exited.done():
                process.exited.set_result(Exit(None, 0.0, zygote_lost=True))
        self._workers.clear()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ZygoteLostError("the zygote died during a fork"))

    async def stop(self) -> None:
        """Close the control socket (the zygote exits on EOF) and reap it."""
        proc, self._proc = self._proc, None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader_task, STOP_TIMEOUT_S)
            self._reader_task = None
        if proc is not None:
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
