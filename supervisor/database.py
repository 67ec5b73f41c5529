"""The database connection: engine, migrations at boot, and a thread pool that keeps every call off the
event loop (a Supabase round trip from Render takes milliseconds to tens of them).

PostgreSQL through a transaction pooler (PgBouncer in transaction mode, Supabase's port 6543) has no
session: no LISTEN, no session advisory lock, no prepared statement. So statements are never
prepared (``prepare_threshold=None``), the migration lock is a transaction-level advisory lock taken
in the migration's own transaction, and LISTEN is probed before it is relied on (supervisor/wakeups.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import create_engine

from supervisor.errors import StoreUnavailableError
from supervisor.schema import SCHEMA

T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed 64-bit number: concurrent boots wait on it while one of them migrates.
MIGRATION_LOCK_KEY = 0x6D656D7669736F72  # "memvisor"
TRANSACTION_POOLER_PORT = 6543  # Supabase's transaction pooler
# The newest revision, from the scripts' names (0003_task_outputs.py): known without importing Alembic.
HEAD = max(path.name[:4] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def normalize_url(url: str) -> str:
    """Accept the URLs Supabase and Render hand out (postgres://, postgresql://) with our driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Database:
    """One engine and one small thread pool per process; ``run`` is how async code reaches it."""

    def __init__(self, url: str, pool_size: int = 4, migrate: bool = True) -> None:
        self.url = normalize_url(url)
        self.postgres = not self.url.startswith("sqlite")
        self.schema = SCHEMA if self.postgres else None
        self.raw = _engine(self.url, pool_size)
        # The models name no schema; on PostgreSQL every statement maps it to memvisor's own.
        self.engine = (
            self.raw.execution_options(schema_translate_map={None: SCHEMA}) if self.postgres else self.raw
        )
        self._executor = ThreadPoolExecutor(pool_size, thread_name_prefix="memvisor-db")
        if migrate and not self.guard(self.at_head):
            self.guard(self.migrate)

    @property
    def transaction_pooler_port(self) -> bool:
        return self.postgres and make_url(self.url).port == TRANSACTION_POOLER_PORT

    def at_head(self) -> bool:
        """Whether the schema is at the newest revision already: then Alembic (about 10 MB once
        imported, for the life of the process) is never loaded. The service migrates in a child
        process before it serves (``python -m supervisor.migrations``), so its own process reads this."""
        table = f'"{SCHEMA}".alembic_version' if self.postgres else "alembic_version"
        with self.raw.connect() as conn:
            try:
                found = {row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))}
            except SQLAlchemyError:  # no version table yet: a new database, or the first release's
                return False
        return found == {HEAD}

    def migrate(self) -> None:
        """Bring the schema to the newest revision; concurrent boots wait for each other's turn."""
        from alembic import command
        from alembic.config import Config

        with self.raw.connect() as conn, self.begin_on(conn, immediate=True):
            if self.postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            config.attributes["schema"] = self.schema
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def begin_on(self, conn: Connection, immediate: bool = False) -> Iterator[Connection]:
        """A transaction; ``immediate`` takes SQLite's write lock at once (BEGIN IMMEDIATE), so that
        two processes sharing the file serialise instead of failing to upgrade a read lock."""
        if immediate and not self.postgres:
            conn = conn.execution_options(memvisor_begin="BEGIN IMMEDIATE")
        with conn.begin():
            yield conn

    @contextlib.contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[Connection]:
        """A writing transaction: on SQLite it takes the write lock at once, since one that reads
        first and writes later cannot upgrade its lock while another writer waits (and fails)."""
        with self.engine.connect() as conn, self.begin_on(conn, immediate) as inside:
            yield inside

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` in the database's threads; the event loop keeps serving meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def guard(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except SQLAlchemyError as exc:
            cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            detail = f": {cause[0][:200]}" if cause else ""
            raise StoreUnavailableError(f"database unavailable ({type(exc).__name__}{detail})") from exc

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        self.raw.dispose()


def _engine(url: str, pool_size: int) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=10,
            connect_args={"connect_timeout": 5, "prepare_threshold": None},
        )
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling never emits BEGIN IMMEDIATE: we emit every BEGIN ourselves.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait on the writer
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, which is our case
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get("memvisor_begin", "BEGIN"))
