"""How an attempt's end is written: requeued for another attempt, or final; and what is learned.

Every write names the owner and the attempt (a compare-and-set): if the task was taken away from this
instance meanwhile (a peer thought it dead and rescued the task), the write matches nothing, and the
outcome is dropped with a log line rather than overwriting the new owner's record. An outcome that
cannot be written because the database is away is kept and written once it is back.
"""

from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor.admission import Admission
from supervisor.database import Database
from supervisor.errors import StoreUnavailableError
from supervisor.schema import utcnow
from supervisor.states import FINAL, Reason, State
from supervisor.store import Store
from supervisor.verdict import Verdict

log = logging.getLogger(__name__)

Publish = Callable[..., None]


class Outcomes:
    def __init__(
        self,
        store: Store,
        owner: str,
        admission: Admission,
        *,
        spool_dir: Path,
        publish: Publish,
        history: int,
    ) -> None:
        self.store = store
        self.db: Database = store.db
        self.owner = owner
        self.admission = admission
        self.spool_dir = spool_dir
        self.publish = publish
        self.history = history
        # Each kept write, with what follows it once it is written (publish, drop files).
        self._unsaved: list[tuple[Callable[[], State | None], Callable[[State | None], None]]] = []
        self._pending_peaks: dict[str, list[float]] = {}

    async def end(
        self, task_id: str, attempt: int, verdict: Verdict, retry: bool, fields: dict[str, Any]
    ) -> None:
        write = functools.partial(self._write, task_id, attempt, verdict, retry, fields)
        try:
            written = await self.db.run(write)
        except StoreUnavailableError as exc:
            # The answer is kept, not lost: it is written as soon as the database is back.
            log.warning("task %s: outcome not yet saved (%s); retrying", task_id, exc)
            self._unsaved.append((write, functools.partial(self._after, task_id, verdict, retry)))
            return
        self._after(task_id, verdict, retry, written)

    def _write(
        self, task_id: str, attempt: int, verdict: Verdict, retry: bool, fields: dict[str, Any]
    ) -> State | None:
        """Write the attempt's end; the state written, or None if the task was taken away."""
        if retry and self._move(
            task_id,
            attempt,
            State.CANCELLED,
            requested=True,
            reason=Reason.CANCELLED,
            finished_at=utcnow(),
            **fields,
        ):
            # A cancel asked through a peer is terminal: a retry must not run the task again.
            return State.CANCELLED
        if retry:
            moved = self._move(task_id, attempt, State.QUEUED, owner_id=None, reason=verdict.reason, **fields)
        else:
            moved = self._move(
                task_id,
                attempt,
                verdict.state,
                reason=verdict.reason,
                result=verdict.result,
                error_type=verdict.error_type,
                error_message=verdict.error_message,
                finished_at=utcnow(),
                **fields,
            )
        if not moved:
            log.warning(
                "task %s attempt %d: outcome %s dropped: the task was taken away from this instance",
                task_id,
                attempt,
                verdict.state,
            )
            return None
        return State.QUEUED if retry else verdict.state

    def _move(
        self, task_id: str, attempt: int, dst: State, requested: bool | None = None, **fields: Any
    ) -> bool:
        """A write fenced by this instance's ownership of ``attempt``."""
        return self.store.transition(
            task_id, dst, src=State.RUNNING, owner=self.owner, attempt=attempt, requested=requested, **fields
        )

    def _after(self, task_id: str, verdict: Verdict, retry: bool, written: State | None) -> None:
        if written is not None:
            reason = Reason.CANCELLED if written == State.CANCELLED else verdict.reason
            self.publish(task_id, written, reason=reason)
        # On PostgreSQL the local directory is a copy of what the database holds: it goes with the
        # attempt. SQLite's spool is the only copy: it goes once the task is final.
        if self.db.postgres or written in FINAL:
            self.drop_files(task_id)

    def drop_files(self, task_id: str) -> None:
        """Remove the task's local spool directory. Every path that ends a task calls this once its
        final state is written (an attempt's end here, a cancel while queued, a refusal at claim, a
        failure at rescue): on SQLite it holds the only copy of the task's uploads."""
        shutil.rmtree(self.spool_dir / task_id, ignore_errors=True)

    async def flush(self) -> None:
        """Write the outcomes kept while the database was away, oldest first, each then ending as it
        would have (published, its files dropped)."""
        while self._unsaved:
            write, after = self._unsaved[0]
            try:
                written = await self.db.run(write)
            except StoreUnavailableError:
                return
            self._unsaved.pop(0)
            after(written)

    def learn(self, kind: str, peak_mb: float) -> None:
        """Admission learns at once; the database hears of it on the next tick, off the task's path."""
        if peak_mb > 0:
            self.admission.observe(kind, peak_mb)
            self._pending_peaks.setdefault(kind, []).append(round(peak_mb, 1))

    async def sync_peaks(self) -> None:
        """Merge this instance's new peaks into the shared ones, and learn what every instance saw."""
        sent = {kind: list(peaks) for kind, peaks in self._pending_peaks.items()}
        try:
            if sent:
                saved = await self.db.run(self.store.merge_peaks, sent, self.history)
            else:
                saved = await self.db.run(self.store.peaks)
        except StoreUnavailableError:
            return
        for kind, peaks in sent.items():  # keep what arrived while the merge ran
            left = self._pending_peaks.get(kind, [])[len(peaks) :]
            if left:
                self._pending_peaks[kind] = left
            else:
                self._pending_peaks.pop(kind, None)
        self.admission.learn_shared(saved, self._pending_peaks)
