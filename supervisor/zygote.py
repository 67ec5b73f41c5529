"""The zygote: a multiprocess forkserver that forks every worker from a clean interpreter.

The API process has threads (ZeroMQ I/O, the watchdog, uvicorn helpers), so it must never fork
itself. The forkserver is a fresh, single-threaded interpreter that imports the kind modules and the
worker runtime once, freezes them for the collector, and forks a worker per task. Exit statuses come
back through each worker's sentinel pipe; a killed zygote is restarted on the next start.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import multiprocess
from multiprocess import spawn

from supervisor.memory import rss_mb
from workers.runtime import worker_main

log = logging.getLogger(__name__)

# The zygote imports nothing heavy; glibc's per-thread arenas would only fragment the workers' heaps.
CHILD_ENV = {"MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}


def _preparation_without_main(name: str) -> dict[str, Any]:
    """What a forked worker needs from us, minus our __main__.

    By default each new process re-imports the parent's main script as ``__mp_main__``: under
    ``pytest`` or a console-script ``uvicorn`` that would import the whole test runner or server
    into every worker. Workers need only sys.path and the working directory.
    """
    data: dict[str, Any] = _original_preparation(name)
    data.pop("init_main_from_name", None)
    data.pop("init_main_from_path", None)
    return data


_original_preparation = spawn.get_preparation_data
spawn.get_preparation_data = _preparation_without_main


class Zygote:
    def __init__(self, preload: tuple[str, ...]) -> None:
        self._ctx: Any = multiprocess.get_context("forkserver")
        # Kind modules first; workers.zygote last, because it gc.freeze()s what came before.
        self._ctx.set_forkserver_preload([*preload, "workers.zygote"])

    def start(self) -> None:
        """Start the zygote, or restart it if it died; cheap when it is running."""
        for key, value in CHILD_ENV.items():
            os.environ.setdefault(key, value)
        from multiprocess import forkserver

        forkserver.ensure_running()
        log.info("zygote running, pid %s", self.pid)

    @property
    def pid(self) -> int | None:
        from multiprocess import forkserver

        return forkserver._forkserver._forkserver_pid  # type: ignore[no-any-return]

    def alive(self) -> bool:
        pid = self.pid
        return pid is not None and _alive(pid)

    def pids(self) -> list[int]:
        """The zygote and multiprocess's resource tracker: the processes it keeps besides workers."""
        from multiprocess import resource_tracker

        tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
        return [pid for pid in (self.pid, tracker) if pid]

    def rss_mb(self) -> float:
        return rss_mb(self.pids())

    def fork_worker(self, task_id: str, attempt: int, endpoint: str, threads: int) -> Any:
        """Start one worker; returns the started multiprocess.Process (pid, sentinel, exitcode)."""
        process = self._ctx.Process(
            target=worker_main,
            args=(task_id, attempt, endpoint, threads),
            name=f"memvisor-{task_id}",
            daemon=False,
        )
        process.start()
        return process

    def stop(self) -> None:
        from multiprocess import forkserver

        server = forkserver._forkserver
        pid = server._forkserver_pid
        if pid is None:
            return
        server._stop()  # closes the alive pipe; the zygote exits and is reaped here
        log.info("zygote %s stopped", pid)


def _alive(pid: int) -> bool:
    """Without reaping: the forkserver module waits for its own server and must find it unreaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] not in (b"Z", b"X")
