"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SupervisorDep
from api.errors import MemvisorRoute

router = APIRouter(route_class=MemvisorRoute, tags=["health"])
live_router = APIRouter(tags=["health"])


@live_router.get("/healthz", summary="Liveness: answers while the process serves (no database, no workers)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database answers and the zygote is alive")
async def readyz(supervisor: SupervisorDep) -> JSONResponse:
    checks = await supervisor.readiness()
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
