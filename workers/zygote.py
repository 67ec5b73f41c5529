"""The zygote: a small, single-threaded interpreter that forks one worker per task.

Started by the supervisor as ``python -m workers.zygote --fd N --preload a,b``. It imports the kind
modules and the worker runtime once, freezes them for the collector, and then forks on request. It
speaks JSON lines over one inherited Unix socket:

    supervisor -> zygote: {"op": "fork", "seq", "task_id", "attempt", "endpoint", "threads", "cgroup",
                           "spare", "network"}
    zygote -> supervisor: {"op": "ready", "pid"} | {"op": "forked", "seq", "pid"}
                        | {"op": "exit", "pid", "exit_code", "maxrss_kb"}

Why not fork from the API process: it has threads (ZeroMQ I/O, the watchdog, uvicorn's helpers).
Why not multiprocess's forkserver: it pickles each request, starts a resource-tracker process, and
took 7-10 ms per start here against about 1 ms for this; see bench/ for the measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

from workers import sandbox
from workers.lifeline import EXIT_SOFTWARE, die_with_parent
from workers.limits import ZYGOTE_OOM_SCORE_ADJ, raise_oom_score
from workers.procname import SPARE_NAME, WORKER_NAME, ZYGOTE_NAME, set_process_name

PR_SET_CHILD_SUBREAPER = 36


class ZygoteServer:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.children: set[int] = set()
        self.wake_r, self.wake_w = os.pipe()
        self.selector = selectors.DefaultSelector()
        self._buffer = b""

    def serve(self) -> None:
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd fires
        self._send({"op": "ready", "pid": os.getpid()})
        self.selector.register(self.control, selectors.EVENT_READ, self._on_control)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._on_sigchld)
        while True:
            for key, _ in self.selector.select():
                key.data()

    def _on_control(self) -> None:
        data = self.control.recv(65536)
        if not data:
            raise SystemExit(0)  # the supervisor is gone; our workers die with us (PDEATHSIG)
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self._fork(json.loads(line))

    def _fork(self, request: dict[str, Any]) -> None:
        pid = os.fork()
        if pid == 0:
            self._become_worker(request)
        self.children.add(pid)
        self._send({"op": "forked", "seq": request["seq"], "pid": pid})

    def _become_worker(self, request: dict[str, Any]) -> None:
        """In the child: drop the zygote's state, join the task's cgroup, run the worker. Never returns."""
        code = EXIT_SOFTWARE  # unless worker_main exits with its own code
        try:
            spare = bool(request.get("spare"))
            set_process_name(SPARE_NAME if spare else WORKER_NAME)
            if request.get("cgroup"):
                # First thing: from here on, every page this worker touches is charged to its cgroup.
                with open(os.path.join(request["cgroup"], "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self.selector.close()
            for fd in (self.wake_r, self.wake_w):
                os.close(fd)
            self.control.close()
            sandbox.set_fork_network(bool(request.get("network", True)))
            from workers.runtime import worker_main

            task_id, attempt = request["task_id"], request["attempt"]
            worker_main(task_id, attempt, request["endpoint"], request["threads"], spare)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def _on_sigchld(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_r, 4096)
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children:  # else an orphaned grandchild we adopted and just reaped
                self.children.discard(pid)
                exit_code = os.waitstatus_to_exitcode(status)
                self._send({"op": "exit", "pid": pid, "exit_code": exit_code, "maxrss_kb": usage.ru_maxrss})

    def _send(self, message: dict[str, Any]) -> None:
        self.control.sendall(json.dumps(message).encode() + b"\n")


def _prepare(preload: list[str]) -> None:
    die_with_parent()  # never outlive the supervisor
    libc = ctypes.CDLL(None, use_errno=True)
    # A worker's children outlive it if it is killed: they are re-parented here and reaped, rather
    # than left as zombies under a PID 1 that may not reap (a container's entrypoint often doesn't).
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    set_process_name(ZYGOTE_NAME)
    raise_oom_score(ZYGOTE_OOM_SCORE_ADJ)  # before the API, after any worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    import msgpack  # noqa: F401
    import pydantic  # noqa: F401
    import zmq  # noqa: F401

    import workers.runtime  # noqa: F401

    for module in preload:
        importlib.import_module(module)
    # Everything imported so far is shared copy-on-write by every worker; freezing it keeps a
    # worker's first garbage collection from touching (and so copying) every inherited page.
    gc.collect()
    gc.freeze()


def _join(procs_file: str) -> None:
    """Join the workers' pool before importing anything: a cgroup v1 or v2 never moves the charges of
    pages already touched, so the imports below would otherwise count as the API's own memory."""
    try:
        with open(procs_file, "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:  # the supervisor moves us after the start, as before
        print(f"zygote: could not join {procs_file}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.zygote")
    parser.add_argument("--fd", type=int, required=True, help="inherited control socket")
    parser.add_argument("--preload", default="", help="comma-separated kind modules")
    parser.add_argument("--sandbox", default="", help="the workers' policy, JSON (workers/sandbox.py)")
    parser.add_argument("--cgroup-procs", default="", help="the workers' pool cgroup to join first")
    args = parser.parse_args(argv)
    if args.cgroup_procs:
        _join(args.cgroup_procs)
    _prepare([m for m in args.preload.split(",") if m])
    sandbox.configure(sandbox.Policy.from_json(args.sandbox))
    ZygoteServer(socket.socket(fileno=args.fd)).serve()


if __name__ == "__main__":
    main(sys.argv[1:])
