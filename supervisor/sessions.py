"""Worker sessions: one claimed attempt in one fresh worker, from the fork to the written outcome.

The supervisor, never the worker, moves the task's uploaded files from the database into the
worker's local task directory before the task is sent (workers hold no database credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor import outputs
from supervisor.broker import Broker
from supervisor.config import SupervisorSettings
from supervisor.enforcement import task_limits
from supervisor.errors import StoreUnavailableError
from supervisor.host import WorkerHost
from supervisor.outcomes import Outcomes
from supervisor.privileges import Privileges
from supervisor.spares import Spare, Spares
from supervisor.states import Reason, State
from supervisor.store import Store, TaskRow
from supervisor.verdict import Ending, Verdict, exit_fields, judge, should_retry
from supervisor.watchdog import Watchdog
from supervisor.worker import RunningWorker
from supervisor.zygote import Exit
from workers import protocol
from workers.catalog import Catalog

log = logging.getLogger(__name__)


class Sessions:
    def __init__(
        self,
        settings: SupervisorSettings,
        catalog: Catalog,
        store: Store,
        *,
        host: WorkerHost,
        spares: Spares,
        outcomes: Outcomes,
        privileges: Privileges,
        publish: Callable[..., None],
        on_free: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.host = host
        self.spares = spares
        self.outcomes = outcomes
        self.privileges = privileges
        self.publish = publish
        self.on_free = on_free  # a slot and its memory are free again: claim
        self.broker = Broker(self.on_message, settings.runtime_dir)
        self.watchdog: Watchdog | None = None
        self.running: dict[bytes, RunningWorker] = {}
        self.idle = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()

    # ----- starting --------------------------------------------------------------------------

    async def launch(self, row: TaskRow) -> None:
        """Start a claimed task (running, owned by this instance, at ``row.attempts``)."""
        spare = self.spares.take(row.ceiling_mb) if self.privileges.spare_fits(row.kind) else None
        worker = RunningWorker(
            task_id=row.id,
            kind=row.kind,
            attempt=row.attempts,
            routing_id=spare.routing_id if spare else protocol.routing_id(row.id, row.attempts),
            ceiling_mb=row.ceiling_mb,
            reserved_mb=row.estimate_mb,
            timeout_s=row.timeout_s,
            retriable=row.retriable,
            max_attempts=row.max_attempts,
            payload=row.payload,
        )
        # Tracked before it exists, so that a cancel arriving during the fork finds it.
        self.running[worker.routing_id] = worker
        self.idle.clear()
        try:
            if row.has_files and self.store.db.postgres:
                await self.store.db.run(self.store.write_files, row.id, self.settings.spool_dir() / row.id)
            await self._fork(worker, spare)
        except Exception as exc:
            log.exception("task %s: could not start a worker", row.id)
            self.forget(worker)
            verdict = Verdict(
                State.FAILED, Reason.CRASHED, error_type="WorkerStartFailed", error_message=str(exc)
            )
            retry = should_retry(verdict, row.retriable, row.attempts, row.max_attempts)
            await self.outcomes.end(row.id, row.attempts, verdict, retry, {})
            return
        log.info(
            "task %s pid %d: started %s (attempt %d, reserve %.0f MB, ceiling %.0f MB)",
            row.id,
            worker.pid,
            row.kind,
            row.attempts,
            row.estimate_mb,
            row.ceiling_mb,
        )

    async def _fork(self, worker: RunningWorker, spare: Spare | None) -> None:
        if spare is not None and spare.process is not None:  # forked, connected and waiting already
            process, worker.cgroup, worker.ready_pid = spare.process, spare.cgroup, spare.ready_pid
        else:
            process = await self.host.spawn(worker, self.broker.endpoint, self.settings.worker_threads)
        worker.started(process.pid)  # signals a kill recorded during the fork
        self._send_task(worker)  # its ready may have arrived before the zygote's reply
        if self.watchdog is not None:
            self.watchdog.add(worker)
        self.publish(worker.task_id, State.RUNNING, pid=worker.pid, attempt=worker.attempt)
        self._spawn(self._finish(worker, process.exited))

    # ----- messages from workers -------------------------------------------------------------

    def on_message(self, routing_id: bytes, msg: dict[str, Any]) -> None:
        worker = self.running.get(routing_id)
        if worker is None and self.spares.owns(routing_id):
            if msg["type"] == protocol.READY:
                self.spares.on_ready(routing_id, msg.get("pid"))
            return
        if worker is None:
            log.warning("message from unknown worker %r dropped", routing_id[:64])
            return
        msg_type = msg["type"]
        if msg_type == protocol.READY:
            self._on_ready(worker, msg)
        elif msg_type == protocol.PROGRESS:
            self.publish(worker.task_id, None, progress=msg.get("data"))
        elif worker.ready and worker.outcome is None:
            worker.outcome = (
                {"error": msg.get("error")} if msg_type == protocol.ERROR else {"result": msg.get("result")}
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
        scratch = self._scratch_dir(worker)
        frame = protocol.encode(
            protocol.TASK,
            task_id=worker.task_id,
            kind=worker.kind,
            module=self.catalog.kinds[worker.kind].module,
            payload=worker.payload,
            data_dir=str(self.settings.data_dir.resolve()),
            spool_dir=str(spool.resolve()),
            output_dir=str(output.resolve()),
            tmp_dir=str(scratch),
            limits=self._limits(worker),
            **self.privileges.task_fields(worker.kind, spool, output, scratch),
        )
        self._send(worker, frame)

    async def _share_outputs(self, task_id: str, verdict: Verdict) -> None:
        """Where instances share a database, a task's files go into it (before its final state is
        written), so that whichever instance a client asks can serve them; the local copy goes."""
        files = (verdict.result or {}).get("files") or []
        if not files or not self.store.db.postgres:
            return
        root = self.settings.outputs_dir()
        names = [f["name"] for f in files]
        try:
            await self.store.db.run(self.store.save_outputs, task_id, outputs.task_dir(root, task_id), names)
        except StoreUnavailableError as exc:  # this instance still serves them from its disk
            log.warning("task %s: outputs kept on this instance only (%s)", task_id, exc)
            return
        outputs.discard(root, task_id)

    def _scratch_dir(self, worker: RunningWorker) -> Path:
        """The attempt's TMPDIR: under the broker's runtime directory, whose path is short and private."""
        parent = self.broker.runtime_dir / "tmp"
        parent.mkdir(mode=0o711, exist_ok=True)
        return parent / f"{worker.task_id[:16]}-{worker.attempt}"

    def _send(self, worker: RunningWorker, frame: bytes) -> None:
        self._spawn(self.broker.send(worker.routing_id, frame))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ----- endings ---------------------------------------------------------------------------

    async def _finish(self, worker: RunningWorker, exited: asyncio.Future[Exit]) -> None:
        end = await exited
        worker.exited = True  # no signal may reach its pid from here on: the kernel may reuse it
        exit_code = end.exit_code
        worker.peak_rss_mb = max(worker.peak_rss_mb, end.maxrss_mb)
        if self.watchdog is not None:
            self.watchdog.remove(worker)
        task_oom = worker.cgroup_oom()
        if task_oom:
            worker.peak_rss_mb = max(worker.peak_rss_mb, worker.ceiling_mb)
        ending = Ending(
            exit_code=exit_code,
            outcome=worker.outcome,
            kill_reason=worker.kill_reason,
            task_oom=task_oom,
            pool_oom=exit_code == -signal.SIGKILL and self.host.new_pool_oom(),
            zygote_lost=end.zygote_lost,
            data_limited=self._limits(worker)["data_slack_mb"] is not None,  # as its TASK frame said
        )
        verdict = judge(ending)
        fields = {
            **exit_fields(exit_code),
            "peak_rss_mb": round(worker.peak_rss_mb, 1),
            "run_s": round(worker.age_s, 3),
            "worker_pid": worker.pid,
        }
        retry = should_retry(verdict, worker.retriable, worker.attempt, worker.max_attempts)
        if not retry:  # a final success lists its output files; any other ending removes them
            verdict = outputs.settle(self.settings.outputs_dir(), worker.task_id, verdict)
            await self._share_outputs(worker.task_id, verdict)
        self.outcomes.learn(worker.kind, worker.peak_rss_mb)
        try:
            await self.outcomes.end(worker.task_id, worker.attempt, verdict, retry, fields)
        finally:
            # The answer is out; removing the cgroup (slow while a spare is attached elsewhere) is off
            # its path. The reservation is held until then: escaped grandchildren die there.
            await self.host.release(worker)
            shutil.rmtree(self._scratch_dir(worker), ignore_errors=True)
            self.forget(worker)
        log.info(
            "task %s pid %d: %s%s, peak %.0f MB, exit %s",
            worker.task_id,
            worker.pid,
            verdict.state,
            f" ({verdict.reason})" if verdict.reason else "",
            worker.peak_rss_mb,
            exit_code,
        )

    def _limits(self, worker: RunningWorker) -> dict[str, float | None]:
        spec = self.catalog.kinds[worker.kind]
        return task_limits(self.settings, worker.ceiling_mb, spec.data_limit, spec.data_slack_mb)

    def forget(self, worker: RunningWorker) -> None:
        self.running.pop(worker.routing_id, None)
        if not self.running:
            self.idle.set()
        self.on_free()

    # ----- queries and commands --------------------------------------------------------------

    def workers(self) -> list[RunningWorker]:
        return list(self.running.values())

    def worker_of(self, task_id: str) -> RunningWorker | None:
        """The live worker of a task; one that has exited is only held until its cgroup is gone."""
        return next((w for w in self.running.values() if w.task_id == task_id and not w.exited), None)

    def kill(self, pid: int) -> RunningWorker | None:
        for worker in self.running.values():
            if worker.pid == pid and not worker.exited:
                worker.kill(Reason.ADMIN_KILL)
                return worker
        return None

    def interrupt_all(self) -> None:
        for worker in [w for w in self.running.values() if not w.exited]:
            worker.kill(Reason.INTERRUPTED)

    async def wait_idle(self, timeout_s: float) -> None:
        if not self.running:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout_s)

    async def settle(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
