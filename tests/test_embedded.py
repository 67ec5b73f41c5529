"""memvisor inside a user's own FastAPI app: the app and its kinds module are written here, as a user
would write them, and served by a real uvicorn process from their own directory."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.server import ROOT, Server, run_fresh, until
from memvisor import Client
from tests.test_light_api import HEAVY

KINDS = """
import sys

from pydantic import BaseModel

from memvisor import TaskContext, task_kind

SERVICE_MODULES = ("fastapi", "sqlalchemy", "sqlmodel", "httpx", "api", "supervisor")


class AddInput(BaseModel):
    a: int
    b: int


class HogInput(BaseModel):
    mb: int


class CountInput(BaseModel):
    file: str


@task_kind("user.add", input_model=AddInput, estimate_mb=40, ceiling_mb=128, timeout_s=30)
def add(payload: AddInput, ctx: TaskContext) -> dict:
    ctx.progress("adding")
    loaded = sorted(m for m in SERVICE_MODULES if m in sys.modules)
    return {"sum": payload.a + payload.b, "service_modules_in_worker": loaded}


@task_kind("user.hog", input_model=HogInput, estimate_mb=40, ceiling_mb=100, timeout_s=60)
def hog(payload: HogInput, ctx: TaskContext) -> dict:
    held = [bytearray(b"\\x01") * (1024 * 1024) for _ in range(payload.mb)]
    return {"held_mb": len(held)}


@task_kind("user.count", input_model=CountInput, estimate_mb=40, ceiling_mb=128, timeout_s=30)
def count(payload: CountInput, ctx: TaskContext) -> dict:
    return {"bytes": (ctx.spool_dir / payload.file).stat().st_size}
"""

APP = f"""
import os
import sys

from fastapi import FastAPI, UploadFile
from fastapi.responses import JSONResponse

from memvisor import MemoryCeilingExceeded, Memvisor

HEAVY = {HEAVY!r}
mv = Memvisor(task_modules=["userkinds"])  # every other setting from the environment
app = FastAPI(lifespan=mv.lifespan)
app.include_router(mv.router, prefix="/jobs")


@app.get("/healthz")
async def healthz() -> dict:
    return {{"ok": True}}


@app.get("/add")
async def add(a: int, b: int) -> dict:
    return await mv.run("user.add", {{"a": a, "b": b}})


@app.post("/hog")
async def hog(mb: int):
    try:
        return await mv.run("user.hog", {{"mb": mb}})
    except MemoryCeilingExceeded as exc:
        body = {{"error": type(exc).__name__, "reason": exc.reason, "task": exc.task}}
        return JSONResponse(body, status_code=507)


@app.post("/count")
async def count(file: UploadFile) -> dict:
    return await mv.run("user.count", files=[file])


@app.get("/process")
async def process() -> dict:
    return {{
        "heavy": [m for m in HEAVY if m in sys.modules],
        "own_database_url": os.environ["DATABASE_URL"],
        "memvisor_database": mv.supervisor_settings.database(),
    }}
"""

APP_WITH_LIFESPAN = """
import contextlib
import os
from pathlib import Path

from fastapi import FastAPI

from memvisor import Memvisor

mv = Memvisor.from_env()  # MEMVISOR_TASK_MODULES names the kinds module
JOURNAL = Path(os.environ["APP_JOURNAL"])


def note(line: str) -> None:
    with JOURNAL.open("a") as journal:
        journal.write(line + "\\n")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    note("own startup")
    app.state.cache = {"warm": True}
    async with mv.lifespan(app):
        note("memvisor running")
        yield
    note("own shutdown")


app = FastAPI(lifespan=lifespan)
app.include_router(mv.router)


@app.get("/healthz")
async def healthz() -> dict:
    return {"cache": app.state.cache}
"""


class AppServer(Server):
    """A user's app served by ``uvicorn module:app``; ``app_dir`` holds the app and its kinds module."""

    app_dir: Path
    cwd: Path
    target: str

    def start(self, ready_timeout_s: float = 60) -> AppServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        cmd = [sys.executable, "-m", "uvicorn", self.target, "--app-dir", str(self.app_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {**self.env, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        until(self._healthy, ready_timeout_s, "the app to answer /healthz")
        return self


def _app_dir(base: Path, app_source: str) -> Path:
    app_dir = base / "userapp"
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "userkinds.py").write_text(textwrap.dedent(KINDS))
    (app_dir / "main.py").write_text(textwrap.dedent(app_source))
    return app_dir


def _app_server(make, base: Path, app_source: str, env: dict[str, str], cwd: Path) -> AppServer:  # type: ignore[no-untyped-def]
    server: AppServer = make(env=env, server_class=AppServer)
    server.app_dir, server.cwd, server.target = _app_dir(base, app_source), cwd, "main:app"
    return server.start()


@pytest.fixture(scope="module")
def app(make_module_server, tmp_path_factory: pytest.TempPathFactory) -> AppServer:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("app")
    data_dir = base / "memvisor-data"
    env = {
        # The host app's own settings, which memvisor must leave alone: its prefixed ones win.
        "DATABASE_URL": "postgresql://host-app@127.0.0.1:1/host_app",
        "DATA_DIR": str(base / "host-app-data"),
        "MEMVISOR_DATA_DIR": str(data_dir),
        "MEMVISOR_DATABASE_URL": f"sqlite:///{data_dir / 'tasks.db'}",
        "ADMIN_TOKEN": "",
    }
    return _app_server(make_module_server, base, APP, env, cwd=base / "userapp")


def test_a_route_awaiting_run_returns_the_kinds_result(app: AppServer) -> None:
    body = app.client.get("/add", params={"a": 2, "b": 40}).json()
    assert body["sum"] == 42
    # The worker was forked from a zygote that never imported the service: kinds import memvisor light.
    assert body["service_modules_in_worker"] == []


def test_a_kind_killed_at_its_ceiling_raises_memory_ceiling_exceeded(app: AppServer) -> None:
    response = app.client.post("/hog", params={"mb": 400})
    assert response.status_code == 507, response.text
    body = response.json()
    assert (body["error"], body["reason"]) == ("MemoryCeilingExceeded", "memory_ceiling")
    assert body["task"]["state"] == "killed" and body["task"]["ceiling_mb"] == 100
    assert body["task"]["peak_rss_mb"] >= 100


def test_the_task_routes_hang_under_the_apps_prefix(app: AppServer) -> None:
    assert app.client.post("/v1/tasks", json={"kind": "user.add"}).status_code == 404
    submitted = app.client.post("/jobs/v1/tasks", json={"kind": "user.add", "payload": {"a": 1, "b": 2}})
    assert submitted.status_code == 202
    done = app.client.get(f"/jobs/v1/tasks/{submitted.json()['id']}", params={"wait_s": 30}).json()
    assert done["result"]["sum"] == 3
    unknown = app.client.post("/jobs/v1/tasks", json={"kind": "nope"})
    assert unknown.status_code == 422 and "user.add" in unknown.json()["known_kinds"]
    with Client(app.url + "/jobs") as client:
        assert client.run("user.add", {"a": 5, "b": 6})["sum"] == 11
        assert "user.hog" in {kind["name"] for kind in client.kinds()}


def test_an_upload_to_the_apps_route_reaches_the_kind(app: AppServer) -> None:
    response = app.client.post("/count", files={"file": ("page.bin", b"x" * 1234)})
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": 1234}


def test_the_apps_process_imports_no_heavy_library_and_keeps_its_own_settings(app: AppServer) -> None:
    app.client.get("/add", params={"a": 1, "b": 1})
    body = app.client.get("/process").json()
    assert body["heavy"] == []
    assert body["own_database_url"].startswith("postgresql://host-app")
    assert body["memvisor_database"].startswith("sqlite:///") and "memvisor-data" in body["memvisor_database"]
    assert (Path(app.env["MEMVISOR_DATA_DIR"]) / "tasks.db").exists()
    assert not Path(app.env["DATA_DIR"]).exists()


def test_a_second_supervisor_on_the_same_data_dir_refuses_with_one_line(app: AppServer) -> None:
    assert app.proc is not None
    data_dir = app.env["MEMVISOR_DATA_DIR"]
    serve = subprocess.run(
        [sys.executable, "-m", "memvisor", "serve"],
        cwd=ROOT,
        env={**app.env, "DATA_DIR": data_dir, "MEMVISOR_DATA_DIR": data_dir, "PORT": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert serve.returncode == 2
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1, serve.stderr
    assert f"is in use by another memvisor supervisor (pid {app.proc.pid})" in lines[0]
    # The same refusal from a second app's lifespan (several uvicorn workers on one DATA_DIR).
    refused = run_fresh(
        f"""
        import asyncio, json
        from memvisor import Memvisor
        from memvisor.lock import DataDirInUseError

        async def main():
            try:
                async with Memvisor(data_dir={data_dir!r}).lifespan():
                    return {{"started": True}}
            except DataDirInUseError as exc:
                return {{"refused": str(exc)}}

        print(json.dumps(asyncio.run(main())))
        """
    )
    assert f"(pid {app.proc.pid})" in refused["refused"]
    assert app.client.get("/add", params={"a": 1, "b": 2}).json()["sum"] == 3  # the first one is fine


def test_an_app_with_its_own_lifespan_runs_both(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal.txt"
    env = {"MEMVISOR_TASK_MODULES": "userkinds", "APP_JOURNAL": str(journal), "ADMIN_TOKEN": ""}
    # Started from another directory (--app-dir): the zygote still finds the kinds module.
    server = _app_server(make_server, tmp_path, APP_WITH_LIFESPAN, env, cwd=tmp_path)
    assert server.client.get("/healthz").json() == {"cache": {"warm": True}}
    with Client(server.url) as client:
        assert client.run("user.add", {"a": 20, "b": 22})["sum"] == 42
    # Plain uvicorn re-raises SIGTERM once it has shut down (the lifespans ran to their end).
    assert server.stop() in (0, -signal.SIGTERM)
    assert journal.read_text().splitlines() == ["own startup", "memvisor running", "own shutdown"]


def test_routes_answer_503_while_memvisor_is_not_running(tmp_path: Path) -> None:
    """Mounted without its lifespan: a clear 503 naming the fix, not a 500."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from memvisor import Memvisor

    app = FastAPI()
    app.include_router(Memvisor(data_dir=tmp_path, admin_token="").router)
    with TestClient(app) as client:
        response = client.get("/v1/tasks")
    assert response.status_code == 503
    assert "mv.lifespan" in response.json()["detail"]
    assert not list(tmp_path.iterdir()), "nothing was started or written"


def test_bad_settings_are_refused_by_name(tmp_path: Path) -> None:
    from memvisor import Memvisor, MemvisorError

    with pytest.raises(MemvisorError, match="unknown memvisor setting 'max_queu'"):
        Memvisor(data_dir=tmp_path, max_queu=3)
    with pytest.raises(ValueError, match="max_queue"):
        Memvisor(data_dir=tmp_path, max_queue=0)
