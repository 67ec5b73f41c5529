"""The supervisor: accepts tasks, admits them by memory budget, runs each in a fresh worker, and
records how each one ended. Runs in the API process's event loop; the watchdog is its one thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from supervisor import admission as admission_mod
from supervisor import outputs
from supervisor.accounting import Accounting
from supervisor.broker import Broker
from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe
from supervisor.errors import (
    AdmissionRefusedError,
    DrainingError,
    InvalidRequestError,
    NotCancellableError,
    QueueFullError,
    StoreUnavailableError,
    TaskNotFoundError,
)
from supervisor.events import EventHub
from supervisor.host import WorkerHost
from supervisor.spares import Spare, Spares
from supervisor.states import FINAL, Reason, State
from supervisor.store import Store, TaskRow, as_utc, utcnow
from supervisor.verdict import Ending, Verdict, exit_fields, judge, should_retry
from supervisor.watchdog import Watchdog
from supervisor.worker import RunningWorker
from supervisor.zygote import Exit
from workers import protocol
from workers.catalog import Catalog

log = logging.getLogger(__name__)

RUNTIME_LIMITS = frozenset(
    {
        "poll_interval_ms",
        "fast_poll_interval_ms",
        "min_poll_interval_ms",
        "fast_poll_ratio",
        "safety_margin_mb",
        "container_high_water_pct",
        "max_concurrency",
        "max_queue",
        "term_grace_s",
    }
)
PSS_GUARD_INTERVAL_S = 0.5
TICK_S = 0.5  # the budget, and the pool's hard limit, are re-read this often
EXIT_DRAIN_S = 5.0


@dataclass(frozen=True)
class Submission:
    kind: str
    payload: dict[str, Any]
    timeout_s: float | None = None
    ceiling_mb: float | None = None
    task_id: str | None = None  # chosen by the caller when files were spooled under it first


class Supervisor:
    def __init__(self, settings: SupervisorSettings, catalog: Catalog, store: Store | None = None):
        self.settings = settings
        self.catalog = catalog
        self.store = store or Store(settings.database())
        self.probe = ContainerProbe(settings.memory_limit_mb)
        self.host = WorkerHost(catalog.modules, settings.worker_cgroups)
        self.zygote = self.host.zygote
        self.broker = Broker(self._on_message, settings.runtime_dir)
        self.spares = Spares(
            self.host,
            self.broker.endpoint,
            settings.worker_threads,
            settings.spare_workers,
            settings.worker_start_timeout_s,
        )
        self.accounting = Accounting(settings, self.probe, self.host, self.workers, self.spares)
        self.admission = admission_mod.Admission(
            settings, self.probe, self.accounting.base_mb, self.store.peaks()
        )
        # Inside a limiting cgroup the guard reads two small files; elsewhere it sums PSS, which costs
        # milliseconds per process: a few times a second is enough there.
        guard_s = 0.0 if self.probe.from_cgroup else PSS_GUARD_INTERVAL_S
        self.watchdog = Watchdog(settings, self.accounting.usage_mb, self.accounting.high_water_mb, guard_s)
        self.events = EventHub()
        self.draining = False
        self._stopping = False
        self._queue: deque[TaskRow] = deque()
        self._running: dict[bytes, RunningWorker] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._finishing: set[asyncio.Task[Any]] = set()
        self._unsaved: list[Callable[[], None]] = []  # outcomes to write once the database is back
        self._unsaved_peaks: dict[str, list[float]] = {}

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.spool_dir().mkdir(parents=True, exist_ok=True)
        self.broker.start()
        await self.host.start()
        self.spares.refill()
        self._recover()
        self.host.set_pool_limit(self.accounting.pool_limit_mb())
        self.watchdog.start()
        self._loops = [
            asyncio.create_task(self._schedule_loop(), name="memvisor-scheduler"),
            asyncio.create_task(self._housekeeping_loop(), name="memvisor-housekeeping"),
            asyncio.create_task(
                outputs.sweep_forever(
                    self.settings.outputs_dir(),
                    self.settings.output_retention_s,
                    lambda: {w.task_id for w in self._running.values()},
                ),
                name="memvisor-outputs",
            ),
        ]
        log.info(
            "supervisor ready: limit %.0f MB (%s), budget %.0f MB, worker cgroups %s",
            self.probe.limit.value_mb,
            self.probe.limit.source,
            self.admission.budget().budget_mb,
            "on" if self.host.cgroups else "off",
        )

    async def stop(self) -> None:
        """Stop admitting; let running tasks finish until the drain deadline; interrupt the rest."""
        self.draining = self._stopping = True
        await self.spares.close()
        if self._running:
            log.info(
                "draining %d running task(s), up to %.0f s", len(self._running), self.settings.drain_timeout_s
            )
            await self._wait_idle(self.settings.drain_timeout_s)
        for worker in [w for w in self._running.values() if not w.exited]:
            worker.kill(Reason.INTERRUPTED)
        await self._wait_idle(EXIT_DRAIN_S)
        if self._finishing:
            await asyncio.gather(*self._finishing, return_exceptions=True)
        for loop_task in self._loops:
            loop_task.cancel()
        self.watchdog.stop()
        self._save_peaks()
        await self.broker.close()
        await self.host.stop()
        self.store.close()

    def _recover(self) -> None:
        """Tasks left running by a previous process were interrupted: requeue or fail them."""
        for row in self.store.in_state(State.RUNNING):
            verdict = Verdict(State.FAILED, Reason.INTERRUPTED, error_message="the service restarted")
            if should_retry(verdict, row.retriable, row.attempts, row.max_attempts):
                self.store.transition(row.id, State.QUEUED, src=State.RUNNING, reason=Reason.INTERRUPTED)
            else:
                self._persist_final(row.id, verdict, {})
            log.warning("task %s was interrupted by a restart", row.id)
        self._queue.extend(self.store.in_state(State.QUEUED))

    # ----- requests --------------------------------------------------------------------------

    def submit(self, sub: Submission) -> TaskRow:
        """Validate, check that the task can ever fit, and queue it. Raises on any refusal."""
        if self.draining:
            raise DrainingError("the service is draining and admits no new task")
        spec = self.catalog.resolve(sub.kind)
        payload = spec.input_model.model_validate(sub.payload).model_dump(mode="json")
        timeout_s = self._timeout(sub.timeout_s, spec.timeout_s)
        budget_mb = self.admission.budget().budget_mb
        ceiling_mb = self._ceiling(sub.ceiling_mb, self.admission.ceiling_mb(spec), budget_mb)
        need_mb = self.admission.need_mb(spec, ceiling_mb)
        if need_mb > budget_mb:
            raise AdmissionRefusedError(spec.name, need_mb, budget_mb)
        if len(self._queue) >= self.settings.max_queue:
            raise QueueFullError(len(self._queue), retry_after_s=self._retry_after_s())
        row = self.store.insert(
            TaskRow(
                id=sub.task_id or uuid.uuid4().hex,
                kind=spec.name,
                payload=payload,
                timeout_s=timeout_s,
                ceiling_mb=ceiling_mb,
                estimate_mb=need_mb,
                retriable=spec.retriable,
                max_attempts=self.settings.max_attempts if spec.retriable else 1,
            )
        )
        self._queue.append(row)
        self._publish(row.id, State.QUEUED)
        self._wake.set()
        return row

    def get(self, task_id: str) -> TaskRow:
        row = self.store.get(task_id)
        if row is None:
            raise TaskNotFoundError(task_id)
        if row.state == State.RUNNING and row.worker_pid is None:
            worker = self._worker_of(task_id)  # the pid is written with the outcome, not at fork
            row.worker_pid = worker.pid if worker and worker.pid else None
        return row

    async def wait(self, task_id: str, wait_s: float) -> TaskRow:
        """The task once it is final, or as it is when ``wait_s`` runs out."""
        queue = self.events.subscribe(task_id)  # before reading, so that no change can slip between
        try:
            row = self.get(task_id)
            deadline = time.monotonic() + wait_s
            while row.state not in FINAL and (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if event.get("state") in FINAL:
                    row = self.get(task_id)  # read once, when there is something final to read
            return self.get(task_id) if row.state not in FINAL else row
        finally:
            self.events.unsubscribe(task_id, queue)

    def cancel(self, task_id: str) -> TaskRow:
        row = self.get(task_id)
        worker = self._worker_of(task_id)
        if worker is not None:
            worker.terminate(Reason.CANCELLED)
            return row
        if row.state == State.QUEUED and self._cancel_queued(row):
            return self.get(task_id)
        raise NotCancellableError(task_id, self.get(task_id).state)

    def kill_worker(self, pid: int) -> RunningWorker:
        for worker in self._running.values():
            if worker.pid == pid and not worker.exited:
                worker.kill(Reason.ADMIN_KILL)
                return worker
        raise TaskNotFoundError(f"worker pid {pid}")

    def workers(self) -> list[RunningWorker]:
        return list(self._running.values())

    def queue_depth(self) -> int:
        return len(self._queue)

    def drain(self) -> None:
        """Stop admitting and starting tasks; running ones finish, queued ones wait."""
        self.draining = True

    def resume(self) -> None:
        if self._stopping:
            raise DrainingError("the service is shutting down")
        self.draining = False
        self._wake.set()

    def limits(self) -> dict[str, Any]:
        values = self.settings.model_dump(include=set(RUNTIME_LIMITS))
        return {**values, "kind_ceilings_mb": dict(self.admission.ceiling_overrides)}

    def update_limits(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Validate every change against the settings' own rules, then apply all of them or none."""
        ceilings = changes.pop("kind_ceilings_mb", None) or {}
        unknown = sorted(set(changes) - RUNTIME_LIMITS) + sorted(set(ceilings) - set(self.catalog.kinds))
        if unknown:
            raise InvalidRequestError(f"not a runtime limit or kind: {', '.join(unknown)}")
        if any(not isinstance(mb, int | float) or mb <= 0 for mb in ceilings.values()):
            raise InvalidRequestError("kind ceilings must be positive numbers of MB")
        try:
            merged = SupervisorSettings.model_validate({**self.settings.model_dump(), **changes})
        except ValidationError as exc:
            reasons = "; ".join(str(error["msg"]) for error in exc.errors())
            raise InvalidRequestError(f"limits refused: {reasons}") from None
        for name in changes:
            object.__setattr__(self.settings, name, getattr(merged, name))
        self.admission.ceiling_overrides.update({k: float(v) for k, v in ceilings.items()})
        self._wake.set()
        return self.limits()

    def _cancel_queued(self, row: TaskRow) -> bool:
        verdict = Verdict(State.CANCELLED, Reason.CANCELLED)
        if not self._persist_final(row.id, verdict, {}, src=State.QUEUED):
            return False
        self._queue = deque(r for r in self._queue if r.id != row.id)
        return True

    def _timeout(self, requested_s: float | None, default_s: float) -> float:
        timeout_s = default_s if requested_s is None else requested_s
        if not 0 < timeout_s <= self.settings.max_timeout_s:
            raise InvalidRequestError(f"timeout_s must be in (0, {self.settings.max_timeout_s:g}]")
        return float(timeout_s)

    def _ceiling(self, requested_mb: float | None, kind_mb: float, budget_mb: float) -> float:
        if requested_mb is None:
            return min(kind_mb, budget_mb) if budget_mb > 0 else kind_mb
        if requested_mb <= 0:
            raise InvalidRequestError("ceiling_mb must be positive")
        if requested_mb > budget_mb:
            raise InvalidRequestError(
                f"ceiling_mb {requested_mb:.0f} MB exceeds the memory budget of {budget_mb:.0f} MB"
            )
        return float(requested_mb)

    def _retry_after_s(self) -> int:
        return max(1, min(60, len(self._queue) // max(1, len(self._running) or 1)))

    # ----- scheduling ------------------------------------------------------------------------

    async def _schedule_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._dispatch_ready()
            except Exception:  # e.g. the database went away: try again on the next wake-up
                log.exception("dispatch failed")

    async def _housekeeping_loop(self) -> None:
        """The budget moves with the API's own usage: follow it even while the scheduler is busy."""
        while True:
            await asyncio.sleep(TICK_S)
            self._save_unsaved()
            self._save_peaks()
            if not self.draining:
                await self.host.ensure()
                self.spares.refill()
            self.host.set_pool_limit(self.accounting.pool_limit_mb())
            self._wake.set()

    async def _dispatch_ready(self) -> None:
        if self.draining or not self._queue or not await self.host.ensure():
            return
        budget_mb = self.admission.budget().budget_mb
        rows = list(self._queue)
        needs = [self._need_mb(row) for row in rows]
        slots = self.settings.max_concurrency - len(self._running)
        decision = admission_mod.plan(needs, self.accounting.committed_mb(), budget_mb, slots)
        chosen = set(decision.start) | set(decision.refuse)
        self._queue = deque(row for position, row in enumerate(rows) if position not in chosen)
        order = sorted(chosen)
        for index, position in enumerate(order):
            row, need_mb = rows[position], needs[position]
            try:
                if position in decision.refuse:
                    self._refuse(row, need_mb or 0.0, budget_mb)
                else:
                    await self._launch(row, need_mb or 0.0, min(row.ceiling_mb, budget_mb))
            except StoreUnavailableError as exc:
                # Still queued in the store: back to the head, in order, for the next tick.
                self._queue.extendleft(rows[p] for p in reversed(order[index:]))
                log.warning("task %s and %d after it stay queued: %s", row.id, len(order) - index - 1, exc)
                return

    def _need_mb(self, row: TaskRow) -> float | None:
        spec = self.catalog.kinds.get(row.kind)
        return self.admission.need_mb(spec, row.ceiling_mb) if spec else None

    def _refuse(self, row: TaskRow, need_mb: float, budget_mb: float) -> None:
        """A queued task that no longer fits even an empty container (or whose kind is gone)."""
        if row.kind not in self.catalog.kinds:
            verdict = Verdict(
                State.FAILED,
                Reason.ERROR,
                error_type="UnknownKind",
                error_message=f"kind {row.kind!r} is no longer registered",
            )
        else:
            verdict = Verdict(
                State.FAILED,
                Reason.TOO_BIG_FOR_BUDGET,
                error_type="AdmissionRefused",
                error_message=str(AdmissionRefusedError(row.kind, need_mb, budget_mb)),
            )
        self._persist_final(row.id, verdict, {}, src=State.QUEUED)

    async def _launch(self, row: TaskRow, need_mb: float, ceiling_mb: float) -> None:
        attempt = row.attempts + 1
        started_at = utcnow()
        if not self.store.transition(
            row.id,
            State.RUNNING,
            src=State.QUEUED,
            started_at=started_at,
            attempts=attempt,
            queue_wait_s=(started_at - (as_utc(row.created_at) or started_at)).total_seconds(),
            ceiling_mb=ceiling_mb,
            estimate_mb=need_mb,
            reason=None,
        ):
            return  # cancelled meanwhile
        spare = self.spares.take(ceiling_mb)
        worker = RunningWorker(
            task_id=row.id,
            kind=row.kind,
            attempt=attempt,
            routing_id=spare.routing_id if spare else protocol.routing_id(row.id, attempt),
            ceiling_mb=ceiling_mb,
            reserved_mb=need_mb,
            timeout_s=row.timeout_s,
            retriable=row.retriable,
            max_attempts=row.max_attempts,
            payload=row.payload,
        )
        # Tracked before it exists, so that a cancel arriving during the fork finds it.
        self._running[worker.routing_id] = worker
        self._idle.clear()
        try:
            await self._fork(worker, spare)
        except Exception as exc:
            log.exception("task %s: could not start a worker", row.id)
            self._forget(worker)
            verdict = Verdict(
                State.FAILED, Reason.CRASHED, error_type="WorkerStartFailed", error_message=str(exc)
            )
            self._end(row.id, verdict, should_retry(verdict, row.retriable, attempt, row.max_attempts), {})
            return
        log.info(
            "task %s pid %d: started %s (attempt %d, reserve %.0f MB, ceiling %.0f MB)",
            row.id,
            worker.pid,
            row.kind,
            attempt,
            need_mb,
            ceiling_mb,
        )

    async def _fork(self, worker: RunningWorker, spare: Spare | None) -> None:
        if spare is not None and spare.process is not None:  # forked, connected and waiting already
            process, worker.cgroup, worker.ready_pid = spare.process, spare.cgroup, spare.ready_pid
        else:
            process = await self.host.spawn(worker, self.broker.endpoint, self.settings.worker_threads)
        worker.started(process.pid)  # signals a kill recorded during the fork
        self._send_task(worker)  # its ready may have arrived before the zygote's reply
        self.watchdog.add(worker)
        self._publish(worker.task_id, State.RUNNING, pid=worker.pid, attempt=worker.attempt)
        watcher = asyncio.create_task(self._finish(worker, process.exited))
        self._finishing.add(watcher)
        watcher.add_done_callback(self._finishing.discard)

    # ----- messages from workers -------------------------------------------------------------

    def _on_message(self, routing_id: bytes, msg: dict[str, Any]) -> None:
        worker = self._running.get(routing_id)
        if worker is None and self.spares.owns(routing_id):
            if msg["type"] == protocol.READY:
                self.spares.on_ready(routing_id, msg.get("pid"))
            return
        if worker is None:
            log.warning("message from unknown worker %r dropped", routing_id[:64])
            return
        kind = msg["type"]
        if kind == protocol.READY:
            self._on_ready(worker, msg)
        elif kind == protocol.PROGRESS:
            self.events.publish(worker.task_id, {"event": "progress", "data": msg.get("data")})
        elif worker.ready and worker.outcome is None:
            worker.outcome = (
                {"error": msg.get("error")} if kind == protocol.ERROR else {"result": msg.get("result")}
            )
            self._send(worker, protocol.encode(protocol.ACK))

    def _on_ready(self, worker: RunningWorker, msg: dict[str, Any]) -> None:
        pid = msg.get("pid")
        if worker.ready or not isinstance(pid, int) or (worker.pid and pid != worker.pid):
            log.warning("task %s: ready from pid %s, expected %d; ignored", worker.task_id, pid, worker.pid)
            return
        worker.ready_pid = pid
        self._send_task(worker)

    def _send_task(self, worker: RunningWorker) -> None:
        """Once the worker said ready and the zygote confirmed its pid (in either order)."""
        if worker.ready or not worker.pid or worker.ready_pid != worker.pid:
            return
        worker.ready = True
        spool = self.settings.spool_dir() / worker.task_id
        output = outputs.prepare(self.settings.outputs_dir(), worker.task_id)
        frame = protocol.encode(
            protocol.TASK,
            task_id=worker.task_id,
            kind=worker.kind,
            module=self.catalog.kinds[worker.kind].module,
            payload=worker.payload,
            data_dir=str(self.settings.data_dir.resolve()),
            spool_dir=str(spool.resolve()),
            output_dir=str(output.resolve()),
        )
        self._send(worker, frame)

    def _send(self, worker: RunningWorker, frame: bytes) -> None:
        task = asyncio.create_task(self.broker.send(worker.routing_id, frame))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)

    # ----- endings ---------------------------------------------------------------------------

    async def _finish(self, worker: RunningWorker, exited: asyncio.Future[Exit]) -> None:
        end = await exited
        worker.exited = True  # no signal may reach its pid from here on: the kernel may reuse it
        exitcode = end.exitcode
        worker.peak_rss_mb = max(worker.peak_rss_mb, end.maxrss_mb)
        self.watchdog.remove(worker)
        task_oom = self.host.task_oom(worker)
        if task_oom:
            worker.peak_rss_mb = max(worker.peak_rss_mb, worker.ceiling_mb)
        ending = Ending(
            exitcode=exitcode,
            outcome=worker.outcome,
            kill_reason=worker.kill_reason,
            task_oom=task_oom,
            pool_oom=exitcode == -signal.SIGKILL and self.host.new_pool_oom(),
            zygote_lost=end.zygote_lost,
        )
        verdict = judge(ending)
        fields = {
            **exit_fields(exitcode),
            "peak_rss_mb": round(worker.peak_rss_mb, 1),
            "run_s": round(worker.age_s, 3),
            "worker_pid": worker.pid,
        }
        retry = should_retry(verdict, worker.retriable, worker.attempt, worker.max_attempts)
        self._learn(worker)
        try:
            self._end(worker.task_id, verdict, retry, fields)
        except StoreUnavailableError as exc:
            # The answer is kept, not lost: it is written as soon as the database is back.
            log.warning("task %s: outcome not yet saved (%s); retrying", worker.task_id, exc)
            self._unsaved.append(lambda: self._end(worker.task_id, verdict, retry, fields))
        finally:
            # The answer is out; removing the cgroup (slow while a spare is attached elsewhere) is off
            # its path. The reservation is held until then: escaped grandchildren die there.
            await self.host.release(worker)
            self._forget(worker)
        log.info(
            "task %s pid %d: %s%s, peak %.0f MB, exit %s",
            worker.task_id,
            worker.pid,
            verdict.state,
            f" ({verdict.reason})" if verdict.reason else "",
            worker.peak_rss_mb,
            exitcode,
        )

    def _save_unsaved(self) -> None:
        while self._unsaved:
            try:
                self._unsaved[0]()
            except StoreUnavailableError:
                return
            self._unsaved.pop(0)

    def _forget(self, worker: RunningWorker) -> None:
        self._running.pop(worker.routing_id, None)
        if not self._running:
            self._idle.set()
        self._wake.set()

    def _end(self, task_id: str, verdict: Verdict, retry: bool, fields: dict[str, Any]) -> None:
        """Persist how an attempt ended: requeued for another attempt, or final."""
        if retry:
            requeued = self.store.transition(
                task_id, State.QUEUED, src=State.RUNNING, reason=verdict.reason, **fields
            )
            if requeued and not self.draining:  # while draining it waits in the store for the next boot
                self._queue.append(self.get(task_id))
                self._publish(task_id, State.QUEUED, reason=verdict.reason)
            return
        self._persist_final(task_id, outputs.settle(self.settings.outputs_dir(), task_id, verdict), fields)
        shutil.rmtree(self.settings.spool_dir() / task_id, ignore_errors=True)

    def _persist_final(
        self, task_id: str, verdict: Verdict, fields: dict[str, Any], src: State = State.RUNNING
    ) -> bool:
        ok = self.store.transition(
            task_id,
            verdict.state,
            src=src,
            reason=verdict.reason,
            result=verdict.result,
            error_type=verdict.error_type,
            error_message=verdict.error_message,
            finished_at=utcnow(),
            **fields,
        )
        if ok:
            self._publish(task_id, verdict.state, reason=verdict.reason)
        return ok

    def _learn(self, worker: RunningWorker) -> None:
        """Admission learns at once; the database hears of it on the next tick, off the task's path."""
        if worker.peak_rss_mb > 0:
            self._unsaved_peaks[worker.kind] = self.admission.observe(worker.kind, worker.peak_rss_mb)

    def _save_peaks(self) -> None:
        for kind, peaks in list(self._unsaved_peaks.items()):
            try:
                self.store.save_peaks(kind, peaks)
            except StoreUnavailableError:
                return
            if self._unsaved_peaks.get(kind) is peaks:
                del self._unsaved_peaks[kind]

    def _publish(self, task_id: str, state: State, **fields: Any) -> None:
        self.events.publish(task_id, {"event": "state", "state": str(state), **fields})

    # ----- memory ----------------------------------------------------------------------------

    def memory_report(self) -> dict[str, Any]:
        budget = self.admission.budget()
        usage = self.accounting.usage()
        return {
            "limit_mb": round(budget.limit_mb, 1),
            "limit_source": budget.limit_source,
            "usage_mb": round(usage.value_mb, 1),
            "usage_source": usage.source,
            "api_and_zygote_mb": round(budget.base_mb, 1),
            "safety_margin_mb": budget.margin_mb,
            "budget_mb": round(budget.budget_mb, 1),
            "committed_mb": round(self.accounting.committed_mb(), 1),
            "reservations": {w.task_id: w.reserved_mb for w in self._running.values()},
            "high_water_mb": round(self.accounting.high_water_mb(), 1),
            "container_oom_kills": self.probe.oom_kills(),
            "worker_cgroups": self.host.cgroups is not None,
            "spare_workers": self.spares.pids(),
            "estimates_mb": {
                name: round(self.admission.estimate_mb(spec), 1) for name, spec in self.catalog.kinds.items()
            },
        }

    async def _wait_idle(self, timeout_s: float) -> None:
        if not self._running:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    def _worker_of(self, task_id: str) -> RunningWorker | None:
        """The live worker of a task; one that has exited is only held until its cgroup is gone."""
        return next((w for w in self._running.values() if w.task_id == task_id and not w.exited), None)
