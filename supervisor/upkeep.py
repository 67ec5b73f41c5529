"""What an instance does in the background: its heartbeat (and with it the rescue of dead instances'
tasks, the shared estimates and retention), and, where it runs tasks, its housekeeping tick."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from supervisor import rescue
from supervisor.errors import StoreUnavailableError
from supervisor.states import Reason, State

if TYPE_CHECKING:
    from supervisor.core import Supervisor

log = logging.getLogger(__name__)

PURGE_EVERY_S = 60.0
TICK_S = 0.5  # the budget, and the pool's hard limit, are re-read this often


async def instance_loop(sup: Supervisor) -> None:
    """Heartbeat, then rescue the dead's tasks, learn the shared estimates, purge old tasks."""
    purged_mono = 0.0
    while True:
        await asyncio.sleep(sup.settings.heartbeat_interval_s)
        try:
            await sup.db.run(sup.instances.beat, report(sup))
            await rescue_once(sup)
            await sup.outcomes.sync_peaks()
            if time.monotonic() - purged_mono > PURGE_EVERY_S:
                purged_mono = time.monotonic()
                await sup.db.run(
                    rescue.purge, sup.db, sup.settings.task_retention_s, sup.settings.output_retention_s
                )
        except StoreUnavailableError as exc:
            log.warning("heartbeat failed: %s", exc)


async def rescue_once(sup: Supervisor) -> None:
    done = await sup.db.run(
        rescue.rescue,
        sup.db,
        sup.instances.id,
        sup.instances.process,
        sup.settings.instance_dead_after_s,
    )
    for task_id in done.requeued:
        sup.publish(task_id, State.QUEUED, reason=Reason.INTERRUPTED)
    for task_id in done.failed:
        sup.publish(task_id, State.FAILED, reason=Reason.INTERRUPTED)
        sup.outcomes.drop_files(task_id)  # SQLite's spool: the only copy
    for task_id in done.cancelled:
        sup.publish(task_id, State.CANCELLED, reason=Reason.CANCELLED)
        sup.outcomes.drop_files(task_id)
    if done.requeued:
        sup.claim_soon()


async def housekeeping_loop(sup: Supervisor) -> None:
    """The budget moves with the API's own usage: follow it even while the claimer is busy."""
    while True:
        await asyncio.sleep(TICK_S)
        try:
            await sup.outcomes.flush()
            if not sup.listening and sup.sessions.running:
                for task_id in await sup.db.run(sup.store.cancels_for, sup.instances.id):
                    sup.cancel_local(task_id)
        except StoreUnavailableError as exc:
            log.warning("housekeeping: %s", exc)
        if not sup.draining:
            await sup.host.ensure()
            sup.spares.refill()
        sup.host.set_pool_limit(sup.accounting.pool_limit_mb())


def report(sup: Supervisor) -> dict[str, Any]:
    """What this instance tells its peers (and /admin/instances) about itself."""
    budget = sup.admission.budget() if sup.runs_tasks else None
    return {
        "limit_mb": round(sup.probe.limit.value_mb, 1),
        "budget_mb": round(budget.budget_mb, 1) if budget else 0.0,
        "enforcement": ("kernel cgroups + watchdog" if sup.host.cgroups else "watchdog")
        if sup.runs_tasks
        else "none (runs no task)",
        "running": len(sup.sessions.running),
        "listening": sup.listening,
    }
