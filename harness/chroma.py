"""A real Chroma server for the tests: ``chroma run``, shipped in the chromadb package (as on Render)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from harness.server import free_port, until

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


def chroma_command() -> Path:
    """The ``chroma`` console script of the running interpreter's environment."""
    command = Path(sys.executable).parent / "chroma"
    if not command.exists():
        raise FileNotFoundError(f"no {command} (pip install chromadb)")
    return command


class ChromaServer:
    """One server on a free port over a temporary directory; ``stop`` and ``start`` keep both."""

    def __init__(self) -> None:
        self.command = chroma_command()
        self.root = Path(tempfile.mkdtemp(prefix="memvisor-chroma-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = ["run", "--path", str(self.root / "db"), "--host", "127.0.0.1", "--port", str(self.port)]
        with (self.root / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.command), *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        until(self._ready, READY_TIMEOUT_S, "the Chroma server's heartbeat", every_s=0.1)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"chroma run exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers; returns once the process is gone and reaped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def log(self) -> str:
        return (self.root / "log").read_text(errors="replace")[-4000:]

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
