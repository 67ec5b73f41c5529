"""Admin: live workers and the memory picture. Mounted only when ADMIN_TOKEN is set."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.auth import require_admin
from api.deps import SupervisorDep
from supervisor.core import Supervisor
from supervisor.states import State
from supervisor.store import as_utc

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def worker_view(supervisor: Supervisor) -> list[dict[str, object]]:
    return [
        {
            "pid": w.pid,
            "task_id": w.task_id,
            "kind": w.kind,
            "attempt": w.attempt,
            "rss_mb": round(w.rss_mb, 1),
            "peak_rss_mb": round(w.peak_rss_mb, 1),
            "ceiling_mb": w.ceiling_mb,
            "reserved_mb": w.reserved_mb,
            "age_s": round(w.age_s, 2),
            "kernel_backstop": w.cgroup is not None,
        }
        for w in supervisor.workers()
    ]


@router.get("/workers", summary="Running workers with live RSS")
async def workers(supervisor: SupervisorDep) -> list[dict[str, object]]:
    return worker_view(supervisor)


@router.post("/workers/{pid}/kill", summary="Kill a worker's whole tree (reason admin_kill)")
async def kill_worker(pid: int, supervisor: SupervisorDep) -> dict[str, object]:
    worker = supervisor.kill_worker(pid)
    return {"killed": pid, "task_id": worker.task_id}


@router.get("/kills", summary="Recent tasks killed or timed out, newest first, with reasons")
async def kills(
    supervisor: SupervisorDep, limit: Annotated[int, Query(ge=1, le=500)] = 20
) -> list[dict[str, object]]:
    rows = supervisor.store.recent_finished((State.KILLED, State.TIMED_OUT), limit)
    return [
        {
            "task_id": row.id,
            "kind": row.kind,
            "state": row.state,
            "reason": row.reason,
            "peak_rss_mb": row.peak_rss_mb,
            "ceiling_mb": row.ceiling_mb,
            "finished_at": as_utc(row.finished_at),
        }
        for row in rows
    ]


@router.get("/memory", summary="Container limit and usage, budget, reservations, estimates")
async def memory(supervisor: SupervisorDep) -> dict[str, object]:
    return supervisor.memory_report()
