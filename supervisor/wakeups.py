"""LISTEN for the database's task notifications (a trigger announces every insert and state change),
in a thread of its own, and hand each to the event loop.

A transaction pooler (PgBouncer in transaction mode, Supabase's port 6543) accepts LISTEN but never
delivers: the server connection goes back to the pool after the statement. So LISTEN is proved with
a notification of our own before it is relied on; where it is not delivered, the instance says so
and lives on its short poll alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from supervisor.schema import NOTIFY_CHANNEL
from supervisor.states import State

if TYPE_CHECKING:
    from supervisor.core import Supervisor

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
SESSION_CHECKS = 4
SESSION_HOLDERS = 2
RECONNECT_S = 1.0
RECHECK = "*"  # handed to the loop after a reconnect: notifications may have been missed
PROGRESS_PREFIX = "p "  # a progress notification; a task's begins with its (hex) id
NOTIFY_MAX_BYTES = 8000  # PostgreSQL's limit on a NOTIFY payload


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    def __init__(self, url: str, on_payload: Callable[[str], None]) -> None:
        self.url = libpq_url(url)
        self.on_payload = on_payload
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Blocking (call it in a thread): True if notifications reach us, and then keep doing so."""
        self._loop = loop
        try:
            self._conn = self._listen()
            delivered = self._session_kept(self._conn) and self._probe(self._conn)
        except Exception as exc:  # psycopg's errors, or none installed: polling still works
            log.warning("LISTEN unavailable (%s): polling only", exc)
            return False
        if not delivered:
            self._conn.close()
            self._conn = None
            return False
        self._thread = threading.Thread(target=self._run, name="memvisor-listen", daemon=True)
        self._thread.start()
        return True

    def _listen(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=None, connect_timeout=5)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def _session_kept(self, conn: Any) -> bool:
        """Our server session (its backend pid, a setting made in it) is still ours in the next
        statement while other clients hold transactions: never false on a direct connection or a
        session pooler; under a transaction pooler, which hands us whichever server connection is
        free (PgBouncer reuses the most recently released one, ours, which a holder then takes), false
        as soon as one round lands elsewhere. Other clients of a busy pooler can hide that, so this is
        a heuristic: DATABASE_POOLER=transaction says it for certain (a wrong guess costs latency,
        never correctness: claimers and waiters poll in any case)."""
        import psycopg

        first = conn.execute("SELECT pg_backend_pid()").fetchone()
        for _ in range(SESSION_CHECKS):
            token = uuid.uuid4().hex
            conn.execute("SELECT set_config('memvisor.probe', %s, false)", (token,))
            with contextlib.ExitStack() as holders:
                for _ in range(SESSION_HOLDERS):
                    other = holders.enter_context(
                        psycopg.connect(self.url, prepare_threshold=None, connect_timeout=5)
                    )
                    other.execute("SELECT 1")  # in a transaction until the stack closes: a server held
                row = conn.execute(
                    "SELECT current_setting('memvisor.probe', true), pg_backend_pid()"
                ).fetchone()
            if not row or row[0] != token or (first and row[1] != first[0]):
                return False
        return True

    def _probe(self, conn: Any) -> bool:
        import psycopg

        token = f"probe {uuid.uuid4().hex}"
        with psycopg.connect(self.url, autocommit=True, prepare_threshold=None, connect_timeout=5) as other:
            other.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, token))
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            for notify in conn.notifies(timeout=left, stop_after=1):
                if notify.payload == token:
                    return True
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for notify in self._conn.notifies(timeout=1.0):
                    if not notify.payload.startswith("probe "):
                        self._hand(notify.payload)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost (%s); reconnecting", exc)
                self._reconnect()

    def _reconnect(self) -> None:
        while not self._stop.wait(RECONNECT_S):
            try:
                self._conn = self._listen()
            except Exception as exc:
                log.warning("LISTEN reconnect failed: %s", exc)
                continue
            self._hand(RECHECK)
            return

    def _hand(self, payload: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.on_payload, payload)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception as exc:
                log.debug("LISTEN connection close: %s", exc)


async def listen(sup: Supervisor) -> bool:
    """LISTEN where the database delivers it; False (poll only) behind a transaction pooler."""
    if sup.listener is None:
        return False
    if sup.settings.database_pooler == "transaction" or (
        sup.settings.database_pooler == "auto" and sup.db.transaction_pooler_port
    ):
        log.warning("transaction pooler: no LISTEN; polling every %g s", sup.settings.queue_poll_interval_s)
        return False
    if await sup.db.run(sup.listener.start, asyncio.get_running_loop()):
        return True
    log.warning(
        "LISTEN is not delivered on this connection (a transaction pooler, such as PgBouncer in "
        "transaction mode or Supabase's port 6543?): polling every %g s",
        sup.settings.queue_poll_interval_s,
    )
    return False


def dispatch(sup: Supervisor, payload: str) -> None:
    """``<task id> <state> <attempts>[ cancel]`` from the database's trigger, a progress
    notification, or a re-check after a reconnect; on the event loop."""
    if payload == RECHECK:
        sup.claim_soon()
        return
    if payload.startswith(PROGRESS_PREFIX):
        _, instance, task_id, data = payload.split(" ", 3)
        if instance != sup.instances.id:  # our own reached our subscribers already
            with contextlib.suppress(ValueError):
                sup.events.publish(task_id, {"event": "progress", "data": json.loads(data)})
        return
    task_id, state, *rest = payload.split()
    if state == State.QUEUED:
        sup.claim_soon()
    sup.events.publish(task_id, {"event": "state", "state": state})
    if "cancel" in rest:
        sup.cancel_local(task_id)


def progress_payload(instance: str, task_id: str, data: Any) -> str | None:
    """Progress for streams on other instances (best effort: in order with other progress, not with
    state changes); None if too large for a notification."""
    payload = f"{PROGRESS_PREFIX}{instance} {task_id} {json.dumps(data)}"
    return payload if len(payload.encode()) < NOTIFY_MAX_BYTES else None
