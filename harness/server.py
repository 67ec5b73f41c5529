"""Run the real service as a subprocess and drive it over HTTP, as a client would.

Every server started here carries a marker in its environment, inherited by its zygote, workers and
their children, so a test can prove that no process of its run is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from workers.procname import SPARE_NAME, ZYGOTE_NAME

ROOT = Path(__file__).resolve().parent.parent
MARKER_VAR = "MEMVISOR_TEST_RUN"
ADMIN_TOKEN = "test-admin-token"
T = TypeVar("T")


def run_fresh(
    script: str, env_extra: dict[str, str] | None = None, drop: tuple[str, ...] = (), timeout_s: float = 180
) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter (as a worker is) and return the JSON it prints last."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"PYTHONPATH": str(ROOT), "MALLOC_ARENA_MAX": "2", **(env_extra or {})})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def passable_for_workers(path: Path) -> None:
    """A root service's workers run as another user, who must pass through the directories above
    DATA_DIR to reach its stores and spool; pytest's and tempfile's directories are 0700. Search only
    (o+x), never listing, and only on directories under the temporary root."""
    if os.geteuid() != 0:
        return
    top = Path(tempfile.gettempdir()).resolve()
    for directory in [path, *path.parents]:
        if directory == top or top not in directory.parents or not directory.is_dir():
            continue
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def until(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(every_s)


def marked_pids(marker: str, zombies: bool = False) -> list[int]:
    """Every live process whose environment carries ``marker`` (or every zombie, if asked)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            state = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and (state == b"Z") == zombies:
            found.append(int(entry.name))
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[1])


class TaskApi:
    """Submit, read and wait for tasks over a service's HTTP API, as a client would."""

    client: httpx.Client

    def submit(self, kind: str, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        response = self.client.post("/v1/tasks", json={"kind": kind, "payload": payload or {}, **fields})
        assert response.status_code == 202, response.text
        body: dict[str, Any] = response.json()
        return body

    def task(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/v1/tasks/{task_id}").json()
        return body

    def wait(self, task_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Long-poll until the task is final; fail if it is not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            body = self.client.get(f"/v1/tasks/{task_id}", params={"wait_s": max(0.1, min(left, 30))}).json()
            if body["state"] not in ("queued", "running"):
                return dict(body)
            if left <= 0:
                raise AssertionError(f"task {task_id} still {body['state']} after {timeout_s} s")


class Server(TaskApi):
    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker = uuid.uuid4().hex
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(data_dir),
            "ENABLE_DIAGNOSTIC_TASKS": "true",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "LOG_LEVEL": "info",
            # `make test` exports the OCR networks here once; every test server shares them.
            "OCR_MODEL_DIR": os.environ.get("OCR_MODEL_DIR", str(ROOT / "data" / "models" / "ocr")),
            MARKER_VAR: self.marker,
            **(env or {}),
        }
        self.wrap = wrap or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=headers)
        self.admin = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    def start(self, ready_timeout_s: float = 30) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        passable_for_workers(self.data_dir)
        log = self.log_path.open("ab")
        cmd = [*self.wrap, sys.executable, "-m", "api"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        until(self._healthy, ready_timeout_s, "the server to answer /healthz")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.client.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def memory(self) -> dict[str, Any]:
        body: dict[str, Any] = self.admin.get("/admin/memory").json()
        return body

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 40) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout_s} s:\n{self.log()}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stray_pids(self) -> list[int]:
        """Processes of this run other than the server, its zygote and its idle spare workers:
        workers that run (or ran) a task, and their children."""
        assert self.proc is not None
        own = {self.proc.pid}
        return [
            pid
            for pid in marked_pids(self.marker)
            if pid not in own and _ppid(pid) not in own and _comm(pid) != SPARE_NAME
        ]

    def spare_pids(self) -> list[int]:
        return [pid for pid in marked_pids(self.marker) if _comm(pid) == SPARE_NAME]

    def zygote_pid(self) -> int | None:
        assert self.proc is not None
        for pid in marked_pids(self.marker):
            if _comm(pid) == ZYGOTE_NAME and _ppid(pid) == self.proc.pid:
                return pid
        return None

    def wait_idle(self, timeout_s: float = 15) -> None:
        """No worker running and no worker process left: the state every test must leave behind."""
        until(
            lambda: not self.admin.get("/admin/workers").json() and not self.stray_pids(), timeout_s, "idle"
        )

    def leftovers(self, timeout_s: float = 10) -> list[int]:
        """Processes of this server still alive once ``timeout_s`` has passed (empty is good)."""
        try:
            until(lambda: not marked_pids(self.marker), timeout_s, "processes to exit")
        except AssertionError:
            return marked_pids(self.marker)
        return []

    def close(self) -> None:
        self.client.close()
        self.admin.close()
