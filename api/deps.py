"""Dependencies shared by the routers.

The routers are not tied to one app: each ``Memvisor`` mounts them behind a dependency that binds the
request to itself (``request.state.memvisor``), and these read the supervisor and settings from there.

They are ``async`` on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, which for
a lookup this small costs more (a thread hand-off per request, and the GIL) than the lookup itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import Depends, Request

from api.config import ApiSettings
from supervisor.core import Supervisor


class Binding(Protocol):
    """What the routes need from the object that mounted them (``memvisor.Memvisor``)."""

    @property
    def supervisor(self) -> Supervisor: ...

    @property
    def api_settings(self) -> ApiSettings: ...

    @property
    def vector_store(self) -> dict[str, Any]: ...


def _binding(request: Request) -> Binding:
    binding: Binding = request.state.memvisor
    return binding


async def get_supervisor(request: Request) -> Supervisor:
    return _binding(request).supervisor


async def get_api_settings(request: Request) -> ApiSettings:
    return _binding(request).api_settings


async def get_vector_store(request: Request) -> dict[str, Any]:
    return _binding(request).vector_store


SupervisorDep = Annotated[Supervisor, Depends(get_supervisor)]
ApiSettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
VectorStoreDep = Annotated[dict[str, Any], Depends(get_vector_store)]
