"""Instances sharing one database: a row per boot, kept fresh by a heartbeat, gone on shutdown.

An instance is dead when its heartbeat is older than ``INSTANCE_DEAD_AFTER_S``, or, seen from the
same machine (same kernel and pid namespace), as soon as its process is gone: a restart on the same
machine need not wait for the threshold. Identity is a fresh id per boot, never the host name.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, update
from sqlalchemy.engine import Connection
from sqlmodel import col, select

from supervisor.database import Database
from supervisor.schema import InstanceRow, as_utc, utcnow

log = logging.getLogger(__name__)

RUNS_TASKS = ("all", "worker")


@dataclass(frozen=True)
class Process:
    """Where a process runs, precisely enough to tell from the same machine whether it still does."""

    machine: str
    pid: int
    pid_start: int


def this_process() -> Process:
    return Process(machine_id(), os.getpid(), process_start(os.getpid()) or 0)


def machine_id() -> str:
    """The kernel's boot id and our pid namespace: two rows with the same value can compare pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"unknown-{uuid.uuid4().hex}"  # never equal to another's: only heartbeats decide
    return f"{boot}/{namespace}"


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])


def process_alive(pid: int, pid_start: int) -> bool:
    return process_start(pid) == pid_start


def is_dead(
    row: InstanceRow,
    now: datetime,
    dead_after_s: float,
    here: Process,
    alive: Callable[[int, int], bool] = process_alive,
) -> bool:
    """Dead: a heartbeat older than the threshold, or, on this very machine, a process that is gone."""
    beat = as_utc(row.heartbeat_at)
    if beat is None or now - beat > timedelta(seconds=dead_after_s):
        return True
    return row.machine == here.machine and not alive(row.pid, row.pid_start)


def db_now(db: Database, conn: Connection) -> datetime:
    """The database's clock on PostgreSQL (instances on several machines compare against one clock)."""
    if db.postgres:
        moment = as_utc(conn.execute(select(func.now())).scalar_one())
        assert moment is not None
        return moment
    return utcnow()


def read_instances(conn: Connection) -> list[InstanceRow]:
    return [InstanceRow.model_validate(dict(row._mapping)) for row in conn.execute(select(InstanceRow)).all()]


class Instances:
    """This instance's row, and what it last read of its peers'."""

    def __init__(self, db: Database, role: str, dead_after_s: float) -> None:
        self.db = db
        self.role = role
        self.dead_after_s = dead_after_s
        self.id = uuid.uuid4().hex
        self.process = this_process()
        self.live: list[InstanceRow] = []

    def register(self, report: dict[str, Any]) -> None:
        def work() -> None:
            with self.db.transaction() as conn:
                now = db_now(self.db, conn)
                conn.execute(insert(InstanceRow).values(self._row(now, report)))

        self.db.guard(work)

    def _row(self, now: datetime, report: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "host": socket.gethostname(),
            "machine": self.process.machine,
            "pid": self.process.pid,
            "pid_start": self.process.pid_start,
            "started_at": now,
            "heartbeat_at": now,
            **report,
        }

    def beat(self, report: dict[str, Any]) -> list[InstanceRow]:
        """Refresh this instance's row with ``report`` (budget, running...); returns the live peers.
        A missing row (a peer thought us dead and removed it) is written again, and said."""

        def work() -> list[InstanceRow]:
            with self.db.transaction() as conn:
                now = db_now(self.db, conn)
                stmt = update(InstanceRow).where(col(InstanceRow.id) == self.id)
                if conn.execute(stmt.values(heartbeat_at=now, **report)).rowcount == 0:
                    log.warning("instance %s was taken for dead by a peer; registered again", self.id)
                    conn.execute(insert(InstanceRow).values(self._row(now, report)))
                rows = read_instances(conn)
            return [
                row
                for row in rows
                if row.id == self.id or not is_dead(row, now, self.dead_after_s, self.process)
            ]

        self.live = self.db.guard(work)
        return self.live

    def remove(self) -> None:
        def work() -> None:
            with self.db.transaction() as conn:
                conn.execute(delete(InstanceRow).where(col(InstanceRow.id) == self.id))

        self.db.guard(work)

    def largest_budget_mb(self, own_mb: float | None) -> float | None:
        """The largest budget of any live instance that runs tasks (this one's as it is now); None
        while none is known, e.g. an ``api`` instance before any worker instance has started."""
        budgets = [row.budget_mb for row in self.live if row.role in RUNS_TASKS and row.id != self.id]
        if own_mb is not None:
            budgets.append(own_mb)
        return max(budgets) if budgets else None

    def view(self) -> list[dict[str, Any]]:
        return [
            {
                **row.model_dump(exclude={"machine", "pid_start"}),
                "heartbeat_at": as_utc(row.heartbeat_at),
                "started_at": as_utc(row.started_at),
                "self": row.id == self.id,
            }
            for row in self.live
        ]
