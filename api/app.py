"""The service's application factory: the same ``Memvisor`` a user's app mounts, with every router.

Settings are validated here (before anything starts); the supervisor lives in ``Memvisor.lifespan``.
"""

from __future__ import annotations

from fastapi import FastAPI

from api.config import ApiSettings
from api.limits import BodyLimitMiddleware
from api.routes import health
from memvisor.embedded import Memvisor
from supervisor.config import SupervisorSettings
from workers.config import KindSettings


def create_app(
    supervisor_settings: SupervisorSettings | None = None,
    kind_settings: KindSettings | None = None,
    api_settings: ApiSettings | None = None,
) -> FastAPI:
    settings = api_settings or ApiSettings()
    mv = Memvisor.from_settings(
        supervisor_settings or SupervisorSettings(), kind_settings or KindSettings(), settings
    )
    app = FastAPI(
        title="memvisor",
        summary="Heavy Python tasks in isolated, memory-bounded worker processes",
        version="0.1.0",
        lifespan=mv.lifespan,
    )
    app.state.memvisor = mv
    app.add_middleware(BodyLimitMiddleware, body_mb=settings.max_body_mb, upload_mb=settings.max_upload_mb)
    if mv.supervisor_settings.role == "worker":
        app.include_router(health.live_router)
        return app  # a worker instance runs tasks; its HTTP only tells the platform it is alive
    app.include_router(mv.health_router)
    app.include_router(mv.router)
    app.include_router(mv.admin_router)  # empty while ADMIN_TOKEN is unset: the routes do not exist
    return app
