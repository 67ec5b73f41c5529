"""Admin: workers, memory, stats, limits, drain, metrics. Mounted only when ADMIN_TOKEN is set."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import require_admin
from api.deps import SupervisorDep, VectorStoreDep
from api.errors import MemvisorRoute
from api.metrics import exposition
from supervisor.core import Supervisor
from supervisor.store import as_utc

router = APIRouter(
    route_class=MemvisorRoute, prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)]
)
metrics_router = APIRouter(route_class=MemvisorRoute, tags=["admin"], dependencies=[Depends(require_admin)])


class LimitsPatch(BaseModel):
    """Any subset; checked by the same rules as the settings, and applied all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    poll_interval_ms: int | None = Field(default=None, ge=5, le=2000)
    fast_poll_interval_ms: int | None = Field(default=None, ge=1, le=2000)
    min_poll_interval_ms: int | None = Field(default=None, ge=1, le=2000)
    fast_poll_ratio: float | None = Field(default=None, gt=0, le=1)
    safety_margin_mb: float | None = Field(default=None, ge=0)
    container_high_water_pct: float | None = Field(default=None, ge=50, le=100)
    max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    max_queue: int | None = Field(default=None, ge=1)
    term_grace_s: float | None = Field(default=None, ge=0, le=60)
    kind_ceilings_mb: dict[str, float] | None = Field(default=None, description="per-kind ceiling")


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
        if w.pid
    ]


@router.get("/security", summary="The workers' protections in force, and why any is off")
async def security(supervisor: SupervisorDep) -> dict[str, Any]:
    return supervisor.security()


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
    rows = await supervisor.recent_kills(limit)
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
async def memory(supervisor: SupervisorDep, vector_store: VectorStoreDep) -> dict[str, object]:
    return {**supervisor.memory_report(), "vector_store": vector_store}


@router.get("/stats", summary="Counts by kind and outcome, kills by reason, queue, wait and run times")
async def stats(supervisor: SupervisorDep, vector_store: VectorStoreDep) -> dict[str, Any]:
    return {
        **await supervisor.stats(),
        "instances": supervisor.instances_view(),
        "vector_store": vector_store,
    }


@router.get("/instances", summary="Live instances on this database: role, budget, enforcement, heartbeat")
async def instances(supervisor: SupervisorDep) -> list[dict[str, Any]]:
    return supervisor.instances_view()


@router.get("/limits", summary="The limits that can change at run time")
async def get_limits(supervisor: SupervisorDep) -> dict[str, Any]:
    return supervisor.current_limits()


@router.patch("/limits", summary="Change limits at run time (until the next restart)")
async def patch_limits(body: LimitsPatch, supervisor: SupervisorDep) -> dict[str, Any]:
    return supervisor.change_limits(body.model_dump(exclude_none=True))


@router.post("/drain", summary="Stop admitting and starting tasks; running tasks finish")
async def drain(supervisor: SupervisorDep) -> dict[str, object]:
    supervisor.drain()
    stats = await supervisor.stats()
    return {"draining": True, "running": len(supervisor.workers()), "queued": stats["queue_depth"]}


@router.post("/resume", summary="Admit and start tasks again")
async def resume(supervisor: SupervisorDep) -> dict[str, object]:
    supervisor.resume()
    return {"draining": False}


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(supervisor: SupervisorDep) -> Response:
    return Response(
        exposition(supervisor, await supervisor.stats()),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
