"""The supervisor: the one interface the API uses. It accepts tasks into the database's queue, and,
unless its role is ``api``, claims what fits its memory budget, runs each task in a fresh worker and
records how each one ended. Runs in the API process's event loop; database calls run in threads.

Its parts: requests.py (submit, cancel), queue.py (claim), sessions.py (workers), outcomes.py
(endings), instances.py (heartbeat), rescue.py (dead instances, retention), wakeups.py (LISTEN),
limits.py (runtime limits, memory), upkeep.py (background loops), watching.py (waits, streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from supervisor import admission as admission_mod
from supervisor import outputs, requests, upkeep, wakeups, watching
from supervisor.accounting import Accounting
from supervisor.config import SupervisorSettings
from supervisor.container import ContainerProbe
from supervisor.database import Database
from supervisor.enforcement import Enforcement, detect
from supervisor.errors import (
    DrainingError,
    StoreUnavailableError,
    TaskNotFoundError,
)
from supervisor.events import EventHub
from supervisor.host import WorkerHost
from supervisor.instances import Instances
from supervisor.limits import Limits
from supervisor.outcomes import Outcomes
from supervisor.privileges import Privileges
from supervisor.privileges_config import PrivilegeSettings
from supervisor.queue import Claimer, Room
from supervisor.requests import Submission
from supervisor.sessions import Sessions
from supervisor.spares import Spares
from supervisor.states import Reason, State
from supervisor.stats import task_stats
from supervisor.store import Store, TaskRow
from supervisor.verdict import Verdict
from supervisor.wakeups import Listener
from supervisor.watchdog import Watchdog
from supervisor.worker import RunningWorker
from workers.catalog import Catalog
from workers.registry import KindSpec

__all__ = ["Submission", "Supervisor"]  # the API's one interface: a request, and who answers it

log = logging.getLogger(__name__)

PSS_GUARD_INTERVAL_S = 0.5
EXIT_DRAIN_S = 5.0
RECHECK_LISTENING_S = 5.0  # a waiter re-reads its task this often even when NOTIFY reaches us


class Supervisor:
    def __init__(
        self,
        settings: SupervisorSettings,
        catalog: Catalog,
        store: Store | None = None,
        privileges: Privileges | None = None,
    ):
        self.settings = settings
        self.catalog = catalog
        self.runs_tasks = settings.role != "api"
        self.store = store or Store(Database(settings.database(), settings.database_pool_size))
        self.db = self.store.db
        self.instances = Instances(self.db, settings.role, settings.instance_dead_after_s)
        self.probe = ContainerProbe(settings.memory_limit_mb)
        self.privileges = privileges or Privileges(PrivilegeSettings(), catalog, settings.data_dir)
        self.host = WorkerHost(catalog.modules, settings.worker_cgroups, self.privileges)
        self.events = EventHub()
        self.sessions: Sessions
        self.spares = Spares(
            self.host, "", settings.worker_threads, settings.spare_workers, settings.worker_start_timeout_s
        )
        self.accounting = Accounting(settings, self.probe, self.host, self.workers, self.spares)
        self.admission = admission_mod.Admission(
            settings,
            self.probe,
            self.accounting.base_mb,
            {},
            pool_backstop=lambda: self.host.cgroups is not None,
        )
        self.enforcement: Enforcement | None = None
        self.outcomes = Outcomes(
            self.store,
            self.instances.id,
            self.admission,
            spool_dir=settings.spool_dir(),
            publish=self.publish,
            history=settings.estimate_history,
        )
        self.sessions = Sessions(
            settings,
            catalog,
            self.store,
            host=self.host,
            spares=self.spares,
            outcomes=self.outcomes,
            privileges=self.privileges,
            publish=self.publish,
            on_free=self.claim_soon,
        )
        self.spares.endpoint = self.sessions.broker.endpoint
        self.claimer = Claimer(self.db, self.instances.id, self, settings.queue_poll_interval_s)
        self.claimer.ready = self.host.ensure
        self.limits = Limits(settings, catalog, self.admission, self.claim_soon)
        self.listener = Listener(self.db.url, self._on_notify) if self.db.postgres else None
        self.listening = False
        self.draining = False
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self.watchdog: Watchdog | None = None

    # ----- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self.settings.spool_dir().mkdir(parents=True, exist_ok=True)
        await self.outcomes.sync_peaks()
        if self.runs_tasks:
            await self._start_workers()
        await self.db.run(self.instances.register, self._report())
        await self._rescue()  # a boot touches only the tasks of dead instances
        self.listening = await wakeups.listen(self)
        self._loops = [asyncio.create_task(upkeep.instance_loop(self), name="memvisor-instance")]
        if self.runs_tasks:
            self._loops += [
                asyncio.create_task(self.claimer.loop(), name="memvisor-claim"),
                asyncio.create_task(upkeep.housekeeping_loop(self), name="memvisor-housekeeping"),
                asyncio.create_task(
                    outputs.sweep_forever(
                        self.settings.outputs_dir(),
                        self.settings.output_retention_s,
                        lambda: {w.task_id for w in self.sessions.workers()},
                    ),
                    name="memvisor-outputs",
                ),
            ]
            self.claimer.wake.set()
        log.info(
            "instance %s (role %s) ready: limit %.0f MB (%s), budget %.0f MB, worker cgroups %s, wake-ups %s",
            self.instances.id,
            self.settings.role,
            self.probe.limit.value_mb,
            self.probe.limit.source,
            self.admission.budget().budget_mb if self.runs_tasks else 0.0,
            "on" if self.host.cgroups else "off",
            "NOTIFY + poll" if self.listening else f"poll every {self.settings.queue_poll_interval_s:g} s",
        )

    async def _start_workers(self) -> None:
        self.sessions.broker.start()
        spool, database = self.settings.spool_dir(), self.settings.database()
        self.privileges.prepare(self.sessions.broker.runtime_dir, spool, database)
        log.info("%s", self.privileges.boot_line())
        await self.host.start()
        self.spares.refill()
        self.host.set_pool_limit(self.accounting.pool_limit_mb())
        # Inside a limiting cgroup the guard reads two small files; elsewhere it sums PSS, which costs
        # milliseconds per process: a few times a second is enough there.
        guard_s = 0.0 if self.probe.from_cgroup else PSS_GUARD_INTERVAL_S
        self.watchdog = Watchdog(
            self.settings, self.accounting.usage_mb, self.accounting.high_water_mb, guard_s
        )
        self.sessions.watchdog = self.watchdog
        self.watchdog.start()
        self.enforcement = detect(self.probe.cgroup, self.host.cgroups is not None, self.settings)
        log.info("%s", self.enforcement.line())

    async def stop(self) -> None:
        """Stop claiming; let running tasks finish until the drain deadline; interrupt the rest.
        Queued tasks stay in the database for the other instances; this instance's row goes."""
        self.draining = self._stopping = True
        self.claimer.stopped = True
        self.claimer.wake.set()
        if self.runs_tasks:
            await self.spares.close()
            if self.sessions.running:
                log.info(
                    "draining %d running task(s), up to %.0f s",
                    len(self.sessions.running),
                    self.settings.drain_timeout_s,
                )
                await self.sessions.wait_idle(self.settings.drain_timeout_s)
            self.sessions.interrupt_all()
            await self.sessions.wait_idle(EXIT_DRAIN_S)
            await self.sessions.settle()
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.outcomes.flush()
        if self.watchdog is not None:
            self.watchdog.stop()
        await self.outcomes.sync_peaks()
        await self.sessions.broker.close()  # never started with role api: removes its empty dir
        if self.runs_tasks:
            await self.host.stop()
        with contextlib.suppress(StoreUnavailableError):
            await self.db.run(self.instances.remove)
        if self.listener is not None:
            await asyncio.to_thread(self.listener.stop)
        await asyncio.to_thread(self.store.close)

    # ----- requests --------------------------------------------------------------------------

    async def submit(self, sub: Submission, files_dir: Path | None = None) -> TaskRow:
        """Queue a task; raises on any refusal (supervisor/requests.py)."""
        return await requests.submit(self, sub, files_dir)

    async def get(self, task_id: str) -> TaskRow:
        row = await self.db.run(self.store.get, task_id)
        if row is None:
            raise TaskNotFoundError(task_id)
        if row.state == State.RUNNING and row.worker_pid is None:
            worker = self.sessions.worker_of(task_id)  # the pid is written with the outcome, not at fork
            row.worker_pid = worker.pid if worker and worker.pid else None
        return row

    async def wait(self, task_id: str, wait_s: float) -> TaskRow:
        """The task once it is final, or as it is when ``wait_s`` runs out."""
        return await watching.wait(self, task_id, wait_s)

    def watch(self, task_id: str) -> AsyncIterator[tuple[str, Any]]:
        """``("state", row)`` now and on every change until final, ``("progress", data)``."""
        return watching.watch(self, task_id)

    def recheck_s(self) -> float:
        """How often a waiter re-reads a task that another instance may have moved."""
        return RECHECK_LISTENING_S if self.listening else self.settings.queue_poll_interval_s

    async def cancel(self, task_id: str) -> TaskRow:
        return await requests.cancel(self, task_id)

    async def list_tasks(self, **filters: Any) -> list[TaskRow]:
        return list(await self.db.run(lambda: self.store.search(**filters)))

    async def recent_kills(self, limit: int) -> list[TaskRow]:
        return list(await self.db.run(self.store.recent_finished, (State.KILLED, State.TIMED_OUT), limit))

    async def stats(self) -> dict[str, Any]:
        figures = await self.db.run(task_stats, self.store)
        queued = await self.db.run(self.store.count, State.QUEUED)
        return {**figures, "queue_depth": queued, "running": len(self.workers()), "draining": self.draining}

    async def readiness(self) -> dict[str, str]:
        checks = {"database": "ok"}
        if self.runs_tasks:
            checks["zygote"] = "ok" if self.host.zygote.alive() else "down"
        try:
            await self.db.run(self.store.ping)
        except StoreUnavailableError as exc:
            checks["database"] = str(exc)
        if self.draining:
            checks["admission"] = "draining"
        return checks

    def instances_view(self) -> list[dict[str, Any]]:
        return self.instances.view()

    def kill_worker(self, pid: int) -> RunningWorker:
        worker = self.sessions.kill(pid)
        if worker is None:
            raise TaskNotFoundError(f"worker pid {pid}")
        return worker

    def workers(self) -> list[RunningWorker]:
        return self.sessions.workers()

    def drain(self) -> None:
        """Stop admitting and claiming tasks; running ones finish, queued ones wait."""
        self.draining = True

    def resume(self) -> None:
        if self._stopping:
            raise DrainingError("the service is shutting down")
        self.draining = False
        self.claim_soon()

    def memory_report(self) -> dict[str, Any]:
        workers = self.workers()
        report = self.limits.memory_report(self.accounting, self.probe, self.host, self.spares, workers)
        return {
            **report,
            "enforcement": self.enforcement.as_dict() if self.enforcement else None,
            "breakdown_mb": self.probe.breakdown_mb(),
            "watchdog": self.watchdog.cost() if self.watchdog else None,
        }

    def spool_dir(self) -> Path:
        return self.settings.spool_dir()

    def kind(self, name: str) -> KindSpec:
        """The enabled kind of that name; raises the refusal an unknown or disabled one gets."""
        return self.catalog.resolve(name)

    def estimate_mb(self, kind: str) -> float:
        return self.admission.estimate_mb(self.catalog.kinds[kind])

    def security(self) -> dict[str, Any]:
        """The workers' protections in force, and why any is off."""
        return self.privileges.report()

    def current_limits(self) -> dict[str, Any]:
        return self.limits.current()

    def change_limits(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self.limits.update(changes)

    def outputs_dir(self) -> Path:
        return self.settings.outputs_dir()

    async def output(self, task_id: str, name: str) -> tuple[dict[str, Any], Path | None]:
        """A task's output file: its listing and its path here, or None where the database holds it."""
        return await requests.output(self, task_id, name)

    def output_chunks(self, task_id: str, name: str) -> AsyncIterator[bytes]:
        return requests.output_chunks(self, task_id, name)

    # ----- what the claimer asks (queue.Host) ------------------------------------------------

    def room(self) -> Room | None:
        slots = self.settings.max_concurrency - len(self.sessions.running)
        if self.draining or slots <= 0:
            return None
        budget_mb = self.admission.budget().budget_mb
        return Room(
            committed_mb=self.accounting.committed_mb(),
            budget_mb=budget_mb,
            slots=slots,
            largest_budget_mb=self.instances.largest_budget_mb(budget_mb),
        )

    def need_mb(self, kind: str, ceiling_mb: float) -> float | None:
        spec = self.catalog.kinds.get(kind)
        return self.admission.need_mb(spec, ceiling_mb) if spec else None

    async def launch(self, row: TaskRow) -> None:
        await self.sessions.launch(row)

    def refused(self, task_id: str, verdict: Verdict) -> None:
        log.warning("task %s ended at claim: %s", task_id, verdict.error_message or verdict.reason)
        self.publish(task_id, verdict.state, reason=verdict.reason)
        self.outcomes.drop_files(task_id)

    # ----- upkeep (supervisor/upkeep.py) -----------------------------------------------------

    async def _rescue(self) -> None:
        await upkeep.rescue_once(self)

    def _report(self) -> dict[str, Any]:
        return upkeep.report(self)

    # ----- events ----------------------------------------------------------------------------

    def claim_soon(self) -> None:
        self.claimer.wake.set()

    def cancel_local(self, task_id: str) -> None:
        worker = self.sessions.worker_of(task_id)
        if worker is not None:
            worker.terminate(Reason.CANCELLED)

    def _on_notify(self, payload: str) -> None:
        wakeups.dispatch(self, payload)

    def publish(self, task_id: str, state: State | None, **fields: Any) -> None:
        if state is None:
            data = fields.get("progress")
            self.events.publish(task_id, {"event": "progress", "data": data})
            if self.listening:  # else progress stays with this instance's streams
                payload = wakeups.progress_payload(self.instances.id, task_id, data)
                if payload is not None:
                    sent = asyncio.create_task(self.db.run(self.store.notify, payload))
                    self._sending.add(sent)
                    sent.add_done_callback(self._sending.discard)
        else:
            self.events.publish(task_id, {"event": "state", "state": str(state), **fields})
