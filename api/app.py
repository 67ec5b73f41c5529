"""The application factory: settings are validated here, the supervisor lives in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.config import ApiSettings
from api.limits import BodyLimitMiddleware
from api.routes import admin, dashboard, health, kinds, outputs, tasks
from supervisor.config import SupervisorSettings
from supervisor.core import Supervisor
from workers.catalog import load_catalog
from workers.config import KindSettings

log = logging.getLogger(__name__)


def create_app(
    supervisor_settings: SupervisorSettings | None = None,
    kind_settings: KindSettings | None = None,
    api_settings: ApiSettings | None = None,
) -> FastAPI:
    sup_settings = supervisor_settings or SupervisorSettings()
    catalog = load_catalog(kind_settings or KindSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        supervisor = Supervisor(sup_settings, catalog)
        await supervisor.start()
        app.state.supervisor = supervisor
        try:
            yield
        finally:
            await supervisor.stop()

    app = FastAPI(
        title="memvisor",
        summary="Heavy Python tasks in isolated, memory-bounded worker processes",
        version="0.1.0",
        lifespan=lifespan,
    )
    settings = api_settings or ApiSettings()
    app.state.api_settings = settings
    app.state.catalog = catalog
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, body_mb=settings.max_body_mb, upload_mb=settings.max_upload_mb)
    app.include_router(health.router)
    app.include_router(tasks.router)
    app.include_router(outputs.router)
    app.include_router(kinds.build_router(catalog))
    if settings.admin_token:
        app.include_router(admin.router)
        app.include_router(admin.metrics_router)
        app.include_router(dashboard.router)
    return app
