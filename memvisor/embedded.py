"""memvisor inside your own FastAPI app: one object holding its settings, kinds, routers and supervisor.

    mv = Memvisor.from_env()
    app = FastAPI(lifespan=mv.lifespan)
    app.include_router(mv.router, prefix="/jobs")

    @app.post("/ocr")
    async def ocr(file: UploadFile) -> dict:
        return await mv.run("ocr", {}, files=[file])

The service itself (``python -m api``) is built from the same object: see ``api.app.create_app``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile  # what a route receives; fastapi's is a subclass

from api.config import ApiSettings
from api.errors import NotStartedError, response_for
from api.routes import admin, dashboard, health, kinds, outputs, tasks
from api.schemas import TaskPublic
from api.submit import submit_with_files
from memvisor.errors import RequestRefused, refusal_for, result_of
from memvisor.lock import DataDirInUseError, DataDirLock
from supervisor.config import SupervisorSettings
from supervisor.core import Submission, Supervisor
from supervisor.privileges import Privileges
from supervisor.privileges_config import PrivilegeSettings
from supervisor.states import FINAL
from supervisor.store import TaskRow
from workers.catalog import Catalog, load_catalog
from workers.config import KindSettings
from workers.errors import ConfigError, MemvisorError
from workers.settings import Settings

log = logging.getLogger("memvisor")

FileArg = str | os.PathLike[str] | UploadFile | tuple[str, bytes | IO[bytes]]
Files = Sequence[FileArg] | Mapping[str, bytes | IO[bytes]]
SETTINGS_CLASSES: tuple[type[Settings], ...] = (
    SupervisorSettings,
    KindSettings,
    ApiSettings,
    PrivilegeSettings,
)
WAIT_CHUNK_S = 3600.0


class Memvisor:
    """Settings, kinds, routers and (between ``start`` and ``stop``) the supervisor of one data directory.

    ``Memvisor(**settings)`` takes any setting by its lower-case name (``data_dir``, ``max_queue``,
    ``task_modules``...); what is not given is read from the environment (``MEMVISOR_<NAME>``, then
    ``<NAME>``). Bad settings raise here, before anything starts.
    """

    def __init__(self, *, task_modules: Iterable[str | ModuleType] | None = None, **settings: Any) -> None:
        if task_modules is not None:
            names = [m.__name__ if isinstance(m, ModuleType) else str(m) for m in task_modules]
            settings["task_modules"] = ",".join(names)
        sup, kind, api, privileges = _split_settings(settings)
        self._setup(
            SupervisorSettings(**sup),
            KindSettings(**kind),
            ApiSettings(**api),
            PrivilegeSettings(**privileges),
        )

    @classmethod
    def from_env(cls) -> Memvisor:
        """Every setting from the environment."""
        return cls()

    @classmethod
    def from_settings(
        cls, supervisor_settings: SupervisorSettings, kind_settings: KindSettings, api_settings: ApiSettings
    ) -> Memvisor:
        mv = cls.__new__(cls)
        mv._setup(supervisor_settings, kind_settings, api_settings)
        return mv

    def _setup(
        self,
        sup: SupervisorSettings,
        kind: KindSettings,
        api: ApiSettings,
        privileges: PrivilegeSettings | None = None,
    ) -> None:
        self.supervisor_settings = sup
        self.kind_settings = kind
        self._api_settings = api
        self.catalog: Catalog = load_catalog(kind)
        # Reported, never opened: the API process does not talk to the vector store.
        self.vector_store = kind.vector_store(sup.data_dir, sup.database_url)
        if self.vector_store["warning"]:
            log.warning("vector store: %s", self.vector_store["warning"])
        # Checked here, before serving: a bad WORKER_USER stops the service with one line.
        self.privileges = Privileges(privileges or PrivilegeSettings(), self.catalog, sup.data_dir)
        self._supervisor: Supervisor | None = None
        self._lock = DataDirLock(sup.data_dir)
        self.router = self._mount(tasks.router, outputs.router, kinds.build_router(self.catalog))
        admin_routers = (admin.router, admin.metrics_router, dashboard.router) if api.admin_token else ()
        self.admin_router = self._mount(*admin_routers)
        self.health_router = self._mount(health.live_router, health.router)

    def _mount(self, *routers: APIRouter) -> APIRouter:
        """The routers behind a dependency that binds each request to this object (see api.deps)."""
        outer = APIRouter(dependencies=[Depends(self._bind)])
        for router in routers:
            outer.include_router(router)
        return outer

    async def _bind(self, request: Request) -> None:
        request.state.memvisor = self

    # ----- what the routes read (api.deps.Binding) ---------------------------------------------

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise NotStartedError(
                "memvisor is not running: pass mv.lifespan to FastAPI(lifespan=...) or enter "
                "`async with mv.lifespan(app):` in your app's own lifespan"
            )
        return self._supervisor

    @property
    def api_settings(self) -> ApiSettings:
        return self._api_settings

    # ----- lifecycle ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=mv.lifespan)``, or ``async with mv.lifespan(app):`` inside your own."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    async def start(self) -> None:
        """Take the data directory's lock, then start the supervisor (zygote, broker, watchdog)."""
        if self._supervisor is not None:
            raise ConfigError("this Memvisor is already running")
        try:
            self._lock.acquire()
        except DataDirInUseError as exc:
            log.error("memvisor: %s", exc)
            raise
        try:
            _export_import_paths(self.catalog.modules)
            supervisor = Supervisor(self.supervisor_settings, self.catalog, privileges=self.privileges)
            await supervisor.start()
        except BaseException:
            self._lock.release()
            raise
        self._supervisor = supervisor

    async def stop(self) -> None:
        """Drain running tasks (up to DRAIN_TIMEOUT_S), stop the supervisor, release the lock."""
        supervisor, self._supervisor = self._supervisor, None
        try:
            if supervisor is not None:
                await supervisor.stop()
        finally:
            self._lock.release()

    async def __aenter__(self) -> Memvisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----- tasks -------------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
        idempotency_key: str | None = None,
    ) -> TaskHandle:
        """Queue a task; refusals raise ``memvisor.RequestRefused`` subclasses, as over HTTP."""
        supervisor = self.supervisor
        submission = Submission(kind, dict(payload or {}), timeout_s, ceiling_mb, None, idempotency_key)
        try:
            if files:
                with contextlib.ExitStack() as stack:
                    uploads = _uploads(files, stack)
                    row = await submit_with_files(supervisor, self.api_settings, submission, uploads)
            else:
                row = await supervisor.submit(submission)
        except (MemvisorError, ValidationError) as exc:
            raise _refusal(exc) from exc
        return TaskHandle(self, _public(row))

    async def run(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        files: Files | None = None,
        timeout_s: float | None = None,
        ceiling_mb: float | None = None,
    ) -> dict[str, Any]:
        """Submit and wait: the result, or a ``memvisor.TaskError`` subclass for how the task ended."""
        handle = await self.submit(kind, payload, files=files, timeout_s=timeout_s, ceiling_mb=ceiling_mb)
        return await handle.result()

    async def get(self, task_id: str) -> dict[str, Any]:
        return _public(await self._call(self.supervisor.get(task_id)))

    async def wait(self, task_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        """The task once it is final, or as it is when ``timeout_s`` runs out (None: no limit)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left_s = WAIT_CHUNK_S if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                row = await self.supervisor.wait(task_id, min(left_s, WAIT_CHUNK_S))
            except MemvisorError as exc:
                raise _refusal(exc) from exc
            if row.state in FINAL or (deadline is not None and time.monotonic() >= deadline):
                return _public(row)

    async def cancel(self, task_id: str) -> dict[str, Any]:
        return _public(await self._call(self.supervisor.cancel(task_id)))

    @staticmethod
    async def _call(work: Awaitable[TaskRow]) -> TaskRow:
        try:
            return await work
        except MemvisorError as exc:
            raise _refusal(exc) from exc


class TaskHandle:
    """A submitted task: ``id``, ``task`` (as submitted), ``await wait()``, ``await result()``,
    ``await cancel()``."""

    def __init__(self, mv: Memvisor, task: dict[str, Any]) -> None:
        self._mv = mv
        self.task = task
        self.id: str = task["id"]

    def __repr__(self) -> str:
        return f"TaskHandle({self.id!r}, kind={self.task.get('kind')!r})"

    async def wait(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The task once final (or as it is when ``timeout_s`` runs out); never raises for its outcome."""
        self.task = await self._mv.wait(self.id, timeout_s)
        return self.task

    async def result(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The task's result; a ``TaskError`` subclass if it ended otherwise; TimeoutError if it is
        not final within ``timeout_s``."""
        task = await self.wait(timeout_s)
        return result_of(task)

    async def cancel(self) -> dict[str, Any]:
        self.task = await self._mv.cancel(self.id)
        return self.task


def _public(row: TaskRow) -> dict[str, Any]:
    return TaskPublic.of(row).model_dump(mode="json")


def _refusal(exc: Exception) -> Exception:
    """The same RequestRefused the HTTP client raises for this refusal (same status, same body)."""
    response = response_for(exc)
    if response is None:
        return exc
    retry_after = response.headers.get("retry-after")
    body = json.loads(bytes(response.body))
    refusal: RequestRefused = refusal_for(
        response.status_code, body, float(retry_after) if retry_after else None
    )
    return refusal


def _split_settings(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each keyword to the settings class that owns it; an unknown name is refused, naming it."""
    parts: list[dict[str, Any]] = [{} for _ in SETTINGS_CLASSES]
    for name, value in settings.items():
        owner = next((i for i, cls in enumerate(SETTINGS_CLASSES) if name in cls.model_fields), None)
        if owner is None:
            known = sorted(n for cls in SETTINGS_CLASSES for n in cls.model_fields)
            raise ConfigError(f"unknown memvisor setting {name!r}; settings are: {', '.join(known)}")
        parts[owner][name] = value
    return parts


def _uploads(files: Files, stack: contextlib.ExitStack) -> list[UploadFile]:
    """Paths, (name, bytes or file) pairs, a {name: bytes} mapping, or UploadFiles, as UploadFiles."""
    items: Iterable[Any] = files.items() if isinstance(files, Mapping) else files
    uploads = []
    for item in items:
        if isinstance(item, UploadFile):
            uploads.append(item)
        elif isinstance(item, str | os.PathLike):
            path = Path(item)
            uploads.append(UploadFile(stack.enter_context(path.open("rb")), filename=path.name))
        else:
            name, data = item
            stream = io.BytesIO(data) if isinstance(data, bytes) else data
            uploads.append(UploadFile(stream, filename=name))
    return uploads


def _export_import_paths(modules: Iterable[str]) -> None:
    """The zygote imports the kind modules by name in a fresh interpreter: give it the directories
    this process found them in (an app started from elsewhere, or with --app-dir, is still found)."""
    roots: list[str] = []
    for name in modules:
        file = getattr(sys.modules.get(name), "__file__", None)
        if not file:
            continue
        root = Path(file).resolve().parent
        for _ in range(name.count(".") + (Path(file).name == "__init__.py")):
            root = root.parent
        roots.append(str(root))
    current = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    missing = [root for root in dict.fromkeys(roots) if root not in current]
    if missing:
        os.environ["PYTHONPATH"] = os.pathsep.join([*current, *missing])
