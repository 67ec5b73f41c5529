"""A database made by the first release (``SQLModel.metadata.create_all`` into PostgreSQL's ``public``
schema, or a SQLite file), with tasks in it, is upgraded in place by the migrations at boot."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg

from harness.postgres import PostgresServer
from harness.server import Server
from supervisor.database import Database
from supervisor.states import State
from supervisor.store import Store

# What create_all emitted for the first release's models (fe78344), dialect by dialect.
LEGACY_TASKS = """
CREATE TABLE kind_stats (kind VARCHAR NOT NULL, peaks_mb JSON NOT NULL, PRIMARY KEY (kind));
CREATE TABLE tasks (
    id VARCHAR NOT NULL, kind VARCHAR NOT NULL, state VARCHAR NOT NULL, payload JSON NOT NULL,
    result JSON, error_type VARCHAR, error_message VARCHAR, reason VARCHAR, attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL, retriable BOOLEAN NOT NULL, timeout_s FLOAT NOT NULL,
    ceiling_mb FLOAT NOT NULL, estimate_mb FLOAT NOT NULL, worker_pid INTEGER, exit_code INTEGER,
    signal INTEGER, peak_rss_mb FLOAT, created_at {stamp} NOT NULL, started_at {stamp},
    finished_at {stamp}, queue_wait_s FLOAT, run_s FLOAT, PRIMARY KEY (id)
);
CREATE INDEX ix_tasks_created_at ON tasks (created_at);
CREATE INDEX ix_tasks_kind ON tasks (kind);
CREATE INDEX ix_tasks_state ON tasks (state);
"""
INSERT = (
    "INSERT INTO tasks (id, kind, state, payload, result, attempts, max_attempts, retriable, timeout_s,"
    " ceiling_mb, estimate_mb, created_at) VALUES (%s, 'diag.sleep', %s, %s, %s, %s, 3, %s, 60, 128, 40, %s)"
)
ROWS = [  # id, state, result, attempts, retriable
    ("legacyqueued", "queued", None, 0, True),
    ("legacyrunning", "running", None, 1, True),  # left running by the old release: no owner
    ("legacydone", "succeeded", json.dumps({"slept_s": 0}), 1, True),
]


def test_first_release_postgres_database_is_upgraded_in_place(make_server, postgres: PostgresServer) -> None:  # type: ignore[no-untyped-def]
    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in LEGACY_TASKS.format(stamp="TIMESTAMP WITH TIME ZONE").split(";"):
            if statement.strip():
                conn.execute(statement)
        for index, (task_id, state, result, attempts, retriable) in enumerate(ROWS):
            created = f"2026-11-30T00:00:0{index}+00:00"
            conn.execute(
                INSERT, (task_id, state, json.dumps({"seconds": 0}), result, attempts, retriable, created)
            )
        conn.execute("INSERT INTO kind_stats VALUES ('diag.sleep', '[31.5, 32.0]')")

    server: Server = make_server(env={"DATABASE_URL": url}).start()
    assert server.wait("legacyqueued")["state"] == "succeeded"
    rescued = server.wait("legacyrunning")
    assert (rescued["state"], rescued["attempts"]) == ("succeeded", 2), "the orphan ran again, once"
    assert server.task("legacydone")["result"] == {"slept_s": 0}
    with psycopg.connect(url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        moved = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'memvisor'")}
        version = conn.execute("SELECT version_num FROM memvisor.alembic_version").fetchone()
        peaks = conn.execute("SELECT peaks_mb FROM memvisor.kind_stats WHERE kind = 'diag.sleep'").fetchone()
    assert not tables & {"tasks", "kind_stats", "alembic_version"}, tables
    assert {"tasks", "kind_stats", "instances", "task_files", "alembic_version"} <= moved
    assert version == ("0003",)
    assert peaks is not None and peaks[0][:2] == [31.5, 32.0], "learned peaks kept"


def test_first_release_sqlite_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "memvisor.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(LEGACY_TASKS.format(stamp="DATETIME"))
        for task_id, state, result, attempts, retriable in ROWS:
            conn.execute(
                INSERT.replace("%s", "?"),
                (task_id, state, "{}", result, attempts, retriable, "2026-11-30 00:00:00"),
            )
    store = Store(Database(f"sqlite:///{path}"))
    try:
        done = store.get("legacydone")
        assert done is not None and done.state == State.SUCCEEDED and done.owner_id is None
        assert [r.id for r in store.in_state(State.RUNNING)] == ["legacyrunning"]
        assert store.transition("legacyqueued", State.CANCELLED, src=State.QUEUED)
    finally:
        store.close()
    again = Database(f"sqlite:///{path}")  # a second boot finds nothing to do
    again.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]
        columns = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
    assert {"owner_id", "idempotency_key", "cancel_requested", "has_files"} <= columns
