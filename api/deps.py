"""Dependencies shared by the routers.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, which for
a lookup this small costs more (a thread hand-off per request, and the GIL) than the lookup itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.config import ApiSettings
from supervisor.core import Supervisor


async def get_supervisor(request: Request) -> Supervisor:
    supervisor: Supervisor = request.app.state.supervisor
    return supervisor


async def get_api_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.api_settings
    return settings


SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
