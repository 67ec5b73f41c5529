"""The ``memvisor`` command against a real server: results on stdout, one exit code per outcome,
listings, and progress on a terminal only."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.server import ROOT, Server, free_port
from memvisor.cli import EXIT_CODES, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE


@pytest.fixture(scope="module")
def server(make_module_server) -> Server:  # type: ignore[no-untyped-def]
    server: Server = make_module_server(env={"TASK_MODULES": "tests.sample_kinds", "DISABLE_OCR": "true"})
    return server.start()


def memvisor_cmd(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memvisor", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MEMVISOR_")},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_prints_the_result_as_json(server: Server, tmp_path: Path) -> None:
    attached = tmp_path / "a.txt"
    attached.write_bytes(b"abcd")
    done = memvisor_cmd(
        "run", "sample.echo", "--payload", '{"text": "cli"}', "--file", str(attached), "--url", server.url
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "cli", "file_bytes": 4}
    assert done.stderr == "", "no progress line when stderr is not a terminal"


@pytest.mark.parametrize(
    ("kind", "payload", "extra", "code", "reason"),
    [
        ("diag.alloc", {"mb": 400}, [], 10, "memory_ceiling"),
        ("diag.sleep", {"seconds": 30}, ["--timeout-s", "1"], 12, "timeout"),
        ("diag.crash", {}, [], 13, "crashed"),
        ("diag.raise", {"message": "cli failure"}, [], 1, "error"),
    ],
)
def test_each_outcome_has_its_exit_code(
    server: Server, *, kind: str, payload: dict[str, Any], extra: list[str], code: int, reason: str
) -> None:
    done = memvisor_cmd("run", kind, "--payload", json.dumps(payload), *extra, "--url", server.url)
    assert done.returncode == code, done.stderr
    assert reason in done.stderr and done.stdout == ""
    server.wait_idle()


def test_exit_codes_are_distinct() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert not set(EXIT_CODES.values()) & {0, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE}


def test_refusals_and_bad_arguments(server: Server, tmp_path: Path) -> None:
    unknown = memvisor_cmd("run", "no.such.kind", "--url", server.url)
    assert unknown.returncode == EXIT_REFUSED and "unknown kind" in unknown.stderr
    bad = memvisor_cmd("run", "sample.echo", "--payload", "[1]", "--url", server.url)
    assert bad.returncode == EXIT_USAGE and "JSON object" in bad.stderr
    missing = memvisor_cmd("run", "sample.echo", "--file", str(tmp_path / "nope"), "--url", server.url)
    assert missing.returncode == EXIT_USAGE and "no such file" in missing.stderr
    away = memvisor_cmd("kinds", "--retries", "1", "--url", f"http://127.0.0.1:{free_port()}")
    assert away.returncode == EXIT_UNREACHABLE and "cannot reach" in away.stderr


def test_tasks_and_kinds_are_listed(server: Server) -> None:
    memvisor_cmd("run", "sample.echo", "--payload", '{"text": "listed"}', "--url", server.url)
    tasks = memvisor_cmd("tasks", "--kind", "sample.echo", "--json", "--url", server.url)
    assert tasks.returncode == 0 and all(t["kind"] == "sample.echo" for t in json.loads(tasks.stdout))
    table = memvisor_cmd("tasks", "--url", server.url)
    assert table.stdout.splitlines()[0].split() == ["id", "kind", "state", "reason", "created_at"]
    kinds = memvisor_cmd("kinds", "--url", server.url)
    assert kinds.returncode == 0
    rows = {line.split()[0]: line for line in kinds.stdout.splitlines()[1:]}
    assert "sample.echo" in rows and "no (DISABLE_OCR)" in rows["sample.switched"]


def test_a_terminal_sees_progress(server: Server) -> None:
    leader, follower = pty.openpty()
    try:
        done = memvisor_cmd(
            "run", "diag.alloc", "--payload", '{"mb": 10, "hold_s": 1}', "--url", server.url, stderr=follower
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and json.loads(done.stdout) == {"allocated_mb": 10}
    text = shown.decode(errors="replace")
    assert "diag.alloc running" in text and "allocated" in text
