"""Fixtures: a real server per test, and the guarantee that none of its processes outlive the test."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.cgroup import LimitedCgroup, Mode, make_cgroup, make_mode
from harness.chroma import ChromaServer
from harness.pgbouncer import PgBouncer
from harness.postgres import PostgresServer
from harness.server import Server, marked_pids

ServerFactory = Callable[..., Server]


def _servers(base: Path) -> Iterator[ServerFactory]:
    """Start servers on demand; at teardown stop them and fail if any of their processes remain."""
    servers: list[Server] = []

    def make(
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        server_class: type[Server] = Server,
        **kw: object,
    ) -> Server:
        server = server_class(data_dir or base / f"data{len(servers)}", env=env, **kw)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    leftovers: list[int] = []
    for server in servers:
        server.stop()
        leftovers += server.leftovers()
        for pid in marked_pids(server.marker):
            os.kill(pid, signal.SIGKILL)
        server.close()
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="session")
def servers_root() -> Iterator[Path]:
    """Where the servers' data directories live. Not under pytest's temporary root: pytest makes that
    0700 again at every session start (any engineer's), and a root service's workers run as another
    user, who must pass through to DATA_DIR. 0711: passable, not listable."""
    root = Path(tempfile.mkdtemp(prefix="memvisor-tests-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _base(root: Path, name: str) -> Path:
    base = root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)[:60]}-{uuid.uuid4().hex[:6]}"
    base.mkdir()
    return base


@pytest.fixture
def make_server(servers_root: Path, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    yield from _servers(_base(servers_root, request.node.name))


@pytest.fixture(scope="module")
def make_module_server(servers_root: Path, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """For a module whose tests can share one server: it starts once, and is checked at the end."""
    yield from _servers(_base(servers_root, request.module.__name__))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    yield server
    server.close()


@pytest.fixture(scope="session")
def chroma() -> Iterator[ChromaServer]:
    """One real Chroma server (`chroma run`) for the whole session; a test that stops it restarts it."""
    try:
        server = ChromaServer()
    except FileNotFoundError as exc:
        pytest.skip(f"no Chroma server can be started here: {exc}")
    yield server
    server.close()
    assert server.proc is None or server.proc.poll() is not None, "chroma run outlived the session"


@pytest.fixture(scope="session")
def pgbouncer(postgres: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the session's PostgreSQL (Supabase's port 6543)."""
    try:
        bouncer = PgBouncer(postgres)
    except (FileNotFoundError, AssertionError) as exc:
        pytest.skip(f"no PgBouncer can be started here: {exc}")
    yield bouncer
    bouncer.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Run the test against SQLite (the default) and against a real PostgreSQL server."""
    if request.param == "sqlite":
        return ""
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.new_database()


@pytest.fixture
def render_cgroup() -> Iterator[LimitedCgroup]:
    """A real 512 MB memory cgroup, as a Render starter instance has; skipped where none can be made."""
    cgroup = make_cgroup(512)
    if isinstance(cgroup, str):
        pytest.skip(cgroup)
    yield cgroup
    cgroup.remove()


@pytest.fixture(params=["render", "lab"])
def service_mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mode]:
    """The 512 MB container in both modes: ``render`` (uid 10001, no writable cgroup, 0.5 CPU) and
    ``lab`` (root, a memory cgroup per worker); skipped where neither can be made."""
    mode = make_mode(request.param, tmp_path / "service")
    if isinstance(mode, str):
        pytest.skip(mode)
    yield mode
    mode.close()


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    return make_server().start()
