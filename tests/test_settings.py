"""A bad setting stops the service before it starts, with a one-line reason and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.server import ROOT


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("POLL_INTERVAL_MS", "abc", "POLL_INTERVAL_MS: Input should be a valid integer"),
        ("WEB_CONCURRENCY", "3", "WEB_CONCURRENCY=3: must be 1"),
        ("MEMORY_LIMIT_MB", "-5", "MEMORY_LIMIT_MB: Input should be greater than 0"),
        ("TASK_MODULES", "no_such_module_here", "cannot import 'no_such_module_here'"),
        ("ADMIN_TOKEN", "short", "ADMIN_TOKEN: String should have at least 8 characters"),
        ("SUPABASE_JWKS", "notjson", "SUPABASE_JWKS: Value error, not JSON"),
        ("CHROMA_URL", "ftp://chroma:8000", "CHROMA_URL: Value error, CHROMA_URL must be an http:// or"),
        ("FAST_POLL_INTERVAL_MS", "500", "FAST_POLL_INTERVAL_MS must not exceed POLL_INTERVAL_MS"),
        (
            "LLM_BASE_URL",
            "https://llm.example/v1",
            "kind 'agent': LLM_MODEL must be set when LLM_BASE_URL is",
        ),
    ],
)
def test_bad_setting_is_refused_clearly(tmp_path: Path, variable: str, value: str, message: str) -> None:
    result = _start_api(tmp_path, {variable: value})
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "a refused start changes nothing"


def test_unreachable_database_stops_the_start_before_the_port_is_bound(tmp_path: Path) -> None:
    result = _start_api(tmp_path, {"DATABASE_URL": "postgresql://u:s3cret@127.0.0.1:1/x"})
    assert result.returncode == 2
    assert "cannot use the database postgresql://u:***@127.0.0.1:1/x" in result.stderr
    assert "s3cret" not in result.stderr and "Uvicorn running" not in result.stderr


def _start_api(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m api`` with ``env`` and a fresh data dir, run until it exits on its own."""
    return subprocess.run(
        [sys.executable, "-m", "api"],
        cwd=ROOT,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
