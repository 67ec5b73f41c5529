"""Fixtures: a real server per test, and the guarantee that none of its processes outlive the test."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cgroup import LimitedCgroup, make_cgroup
from tests.harness import Server, marked_pids
from tests.pgbouncer import PgBouncer
from tests.postgres import PostgresServer

ServerFactory = Callable[..., Server]


def _servers(base: Path) -> Iterator[ServerFactory]:
    """Start servers on demand; at teardown stop them and fail if any of their processes remain."""
    servers: list[Server] = []

    def make(env: dict[str, str] | None = None, data_dir: Path | None = None, **kw: object) -> Server:
        server = Server(data_dir or base / f"data{len(servers)}", env=env, **kw)  # type: ignore[arg-type]
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


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    yield from _servers(tmp_path)


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """For a module whose tests can share one server: it starts once, and is checked at the end."""
    yield from _servers(tmp_path_factory.mktemp("module"))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"no PostgreSQL server can be started here: {exc}")
    yield server
    server.close()


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


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    return make_server().start()
