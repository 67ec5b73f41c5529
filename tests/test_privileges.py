"""Workers run with least privilege, checked from inside a real worker (``diag.inspect``) and from
outside (its /proc entries), in both modes: a root service, and a service run as an unprivileged uid
(as on Render). The decisions behind them are pure functions, checked by Hypothesis.

The only stand-in here is the LLM endpoint (tests/test_agent_kind.py's ``ChatStandIn``): a hosted
LLM cannot run here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.server import Server, until
from supervisor.privileges import (
    ALLOWED_ENV,
    SERVICE_SECRETS,
    may_unshare,
    network_mode,
    resolve_worker_user,
    searchable_by,
    worker_environment,
)
from supervisor.privileges_config import DEFAULT_WORKER_USER
from tests.conftest import ServerFactory
from workers import landlock
from workers.errors import ConfigError
from workers.registry import task_kind
from workers.sandbox import CLONE_NEWNET, CLONE_NEWUSER, around, outermost

UNPRIVILEGED_UID = 10001
API_KEY = "user-key-" + uuid.uuid4().hex
SECRETS = {
    "API_KEYS": API_KEY,
    "SUPABASE_JWT_SECRET": "jwt-secret-" + uuid.uuid4().hex,
    "LLM_API_KEY": "sk-" + uuid.uuid4().hex,
}
LANDLOCK_ABI = landlock.abi_version()[0]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the root mode needs the tests to run as root")
needs_landlock = pytest.mark.skipif(LANDLOCK_ABI == 0, reason=f"no Landlock: {landlock.abi_version()[1]}")

# ---------------------------------------------------------------------------------------------------
# The decisions.

plain_names = sorted(ALLOWED_ENV | SERVICE_SECRETS | {"OMP_X", "LC_ALL", "MY_TOKEN", "X"})
env_names = st.sampled_from(plain_names + ["MEMVISOR_" + name for name in plain_names])


@given(st.dictionaries(env_names, st.text(max_size=5)), st.lists(env_names), st.lists(env_names))
def test_worker_environment_holds_no_secret_and_nothing_invented(
    environ: dict[str, str], extra: list[str], secrets: list[str]
) -> None:
    out = worker_environment(environ, extra, secrets)
    assert out.items() <= environ.items()
    denied = SERVICE_SECRETS | set(secrets)
    # A secret is denied under its MEMVISOR_ name too (settings are read with that prefix first).
    assert not {name.removeprefix("MEMVISOR_") for name in out if name != "MEMVISOR_TEST_RUN"} & denied
    for name in environ:
        base = name.removeprefix("MEMVISOR_")
        if base in ALLOWED_ENV and base not in denied:
            assert name in out


@given(st.booleans(), st.booleans(), st.booleans(), st.integers(0, 8))
def test_network_mode_is_off_only_when_disabled_or_impossible(
    enabled: bool, root: bool, unshare: bool, abi: int
) -> None:
    mode, why = network_mode(enabled, root, unshare, abi)
    assert why
    if not enabled:
        assert (mode, why) == ("off", "WORKER_NETWORK_ISOLATION=false")
    elif unshare:
        assert mode == "namespace"
    else:
        assert mode == ("landlock-tcp" if abi >= 4 else "off")


def test_landlock_grants_go_around_the_data_directory(tmp_path: Path) -> None:
    """DATA_DIR defaults to ./data inside the checkout, which is on sys.path: grant its siblings."""
    for name in ("workers", "api", "data/models", "data/spool", "tests"):
        (tmp_path / "checkout" / name).mkdir(parents=True)
    (tmp_path / "checkout" / "README.md").write_text("x")
    checkout = tmp_path / "checkout"
    granted = around(checkout, checkout / "data")
    assert sorted(p.name for p in granted) == ["README.md", "api", "tests", "workers"]
    assert around(checkout, tmp_path / "elsewhere") == [checkout]
    assert around(checkout / "data" / "models", checkout / "data") == []


@given(st.lists(st.lists(st.sampled_from(["a", "b", "a-b", "c"]), min_size=1, max_size=4)))
def test_outermost_keeps_one_rule_per_covered_tree(parts: list[list[str]]) -> None:
    paths = [Path("/", *p) for p in parts]
    kept = outermost(paths)
    assert set(kept) <= set(paths)
    assert not [k for k in kept if any(other in k.parents for other in kept)]
    assert all(any(k == p or k in p.parents for k in kept) for p in paths)


def test_worker_user_resolution() -> None:
    numeric = resolve_worker_user("12345:23456")
    assert (numeric.uid, numeric.gid) == (12345, 23456)
    with pytest.raises(ConfigError, match="no such user"):
        resolve_worker_user("no-such-user-" + uuid.uuid4().hex[:8])
    try:
        pwd.getpwnam(DEFAULT_WORKER_USER)
    except KeyError:
        fallback = resolve_worker_user(DEFAULT_WORKER_USER)
        assert fallback.uid == 65534 and "does not exist" in fallback.note


def test_searchable_by_finds_the_closed_directory(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    assert searchable_by(closed / "inner", os.geteuid(), os.getegid()) is None
    stranger = os.geteuid() + 4242
    assert searchable_by(closed / "inner", stranger, stranger) in (closed, *closed.parents)
    assert searchable_by(tmp_path / "missing" / "inner", os.geteuid(), os.getegid()) == tmp_path / "missing"


def test_kind_declarations_are_checked() -> None:
    model = type(test_kind_declarations_are_checked)  # any class: never registered
    with pytest.raises(ValueError, match="not an environment variable name"):
        task_kind("x.bad", input_model=model, estimate_mb=1, ceiling_mb=2, secrets=("A-B",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="relative path inside DATA_DIR"):
        task_kind("x.bad", input_model=model, estimate_mb=1, ceiling_mb=2, stores=("../up",))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# A real worker, inspected.


def inspect(server: Server, probes: dict[str, Any]) -> dict[str, Any]:
    task = server.wait(server.submit("diag.inspect", probes)["id"])
    assert task["state"] == "succeeded", task
    result: dict[str, Any] = task["result"]
    return result


def probes_for(server: Server, outside: Path) -> dict[str, Any]:
    assert server.proc is not None
    return {
        "read": [str(server.data_dir / "memvisor.db"), f"/proc/{server.proc.pid}/environ"],
        "write": [str(server.data_dir / "planted"), str(outside / "planted")],
        "connect": [f"127.0.0.1:{server.port}"],
    }


def assert_no_secret(values: Any) -> None:
    text = repr(values)
    for name, value in SECRETS.items():
        assert value not in text, f"{name} reached a worker"


def assert_no_api_descriptor(server: Server, fds: list[dict[str, Any]]) -> None:
    assert server.proc is not None
    api = {
        os.readlink(f"/proc/{server.proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{server.proc.pid}/fd")
    }
    own = [fd for fd in fds if fd["fd"] > 2]
    # Sockets and pipes are named by inode, files by path; anonymous inodes (eventfd, epoll) are one
    # shared inode per type in the kernel, so their names say nothing of where they came from.
    named = [fd for fd in own if not fd["target"].startswith("anon_inode:")]
    assert not [fd for fd in named if fd["target"] in api], "a descriptor of the API process leaked"
    assert {fd.get("family") for fd in own} <= {None, "AF_UNIX"}, own


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def assert_outside_view(server: Server, uid: int) -> None:
    """A running worker and the zygote, seen from outside: environment, uid, no_new_privs."""
    task = server.submit("diag.sleep", {"seconds": 120})
    pid = until(
        lambda: next((w["pid"] for w in server.admin.get("/admin/workers").json()), None), 30, "worker"
    )
    try:
        status = proc_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["NoNewPrivs"] == "1"
        assert_no_secret(Path(f"/proc/{pid}/environ").read_bytes().decode())
        zygote = server.zygote_pid()
        assert zygote is not None
        assert_no_secret(Path(f"/proc/{zygote}/environ").read_bytes().decode())
    finally:
        server.client.delete(f"/v1/tasks/{task['id']}")
    assert server.wait(task["id"])["state"] == "cancelled"


def outside_of(server: Server) -> Path:
    """Beside DATA_DIR, writable by anyone: only the worker's fence can refuse."""
    directory = server.data_dir.parent / "outside"
    directory.mkdir(mode=0o777, exist_ok=True)
    directory.chmod(0o777)
    return directory


@needs_root
def test_root_service_workers_hold_no_secret_no_privilege_no_reach(make_server: ServerFactory) -> None:
    from tests.test_agent_kind import ChatStandIn

    chat = ChatStandIn()
    chat.thread.start()
    try:
        server = make_server(headers={"X-API-Key": API_KEY})
        data_dir = server.data_dir
        env = {
            **SECRETS,
            "DATABASE_URL": f"sqlite:///{data_dir / 'memvisor.db'}",
            "LLM_BASE_URL": chat.base_url,
            "LLM_MODEL": "stand-in-model",
            "LLM_TIMEOUT_S": "10",
        }
        server.env.update(env)
        server.start()
        outside = outside_of(server)
        worker_uid = pwd.getpwnam(DEFAULT_WORKER_USER).pw_uid if _user_exists() else 65534
        report = inspect(server, probes_for(server, outside))
        assert report["uid"] == [worker_uid] * 3 and report["groups"] == []
        assert report["status"]["NoNewPrivs"] == "1" and report["status"]["CapEff"] == "0000000000000000"
        assert report["core_limit"] == [0, 0]
        assert_no_secret([report["environ"], report["proc_environ"]])
        assert all(v.startswith("PermissionError") for v in report["read"].values()), report["read"]
        assert all(v.startswith("PermissionError") for v in report["write"].values()), report["write"]
        assert not (outside / "planted").exists() and not (data_dir / "planted").exists()
        assert report["write_own"] == "ok"
        assert "Network is unreachable" in report["connect"][f"127.0.0.1:{server.port}"]
        assert_no_api_descriptor(server, report["fds"])
        assert_outside_view(server, worker_uid)

        # The agent needs the network and its key: both reach it, and only it.
        task = server.wait(server.submit("agent", {"question": "Why is Mars red?"})["id"])
        assert task["state"] == "succeeded", task
        assert task["result"]["steps"] == ["llm"]
        assert chat.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRETS['LLM_API_KEY']}"

        security = server.admin.get("/admin/security").json()
        assert all(item["on"] for item in security.values()), security
        # The agent here (its LLM endpoint is set) and the browser, which fetches pages; no other kind.
        kinds = {k["name"] for k in server.client.get("/v1/kinds").json()}
        assert security["network"]["kinds_with_network"] == sorted({"agent", "browser.render"} & kinds)
        assert "worker protections on:" in server.log()
    finally:
        chat.release.set()
        chat.server.shutdown()
        chat.server.server_close()


def _user_exists() -> bool:
    try:
        pwd.getpwnam(DEFAULT_WORKER_USER)
    except KeyError:
        return False
    return True


@pytest.fixture
def unprivileged_dir() -> Iterator[Path]:
    """Owned by the unprivileged uid, under a parent it can pass through (pytest's are 0700)."""
    base = Path("/tmp") / f"memvisor-privileges-{uuid.uuid4().hex[:12]}"
    (base / "outside").mkdir(parents=True)
    os.chown(base, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    (base / "outside").chmod(0o777)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@needs_root
@needs_landlock
@pytest.mark.parametrize("isolation", [True, False], ids=["network-isolated", "render-like"])
def test_unprivileged_service_workers_are_fenced_by_landlock(
    make_server: ServerFactory, unprivileged_dir: Path, isolation: bool
) -> None:
    if isolation and not may_unshare(CLONE_NEWUSER | CLONE_NEWNET):
        pytest.skip("user namespaces are not allowed on this machine")
    wrap = ["setpriv", f"--reuid={UNPRIVILEGED_UID}", f"--regid={UNPRIVILEGED_UID}", "--clear-groups"]
    env = {**SECRETS, "WORKER_NETWORK_ISOLATION": str(isolation).lower()}
    data_dir = unprivileged_dir / "data"
    server = make_server(env=env, data_dir=data_dir, wrap=wrap, headers={"X-API-Key": API_KEY})
    data_dir.mkdir()
    os.chown(data_dir, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    server.start()
    outside = unprivileged_dir / "outside"
    report = inspect(server, probes_for(server, outside))
    assert report["uid"] == [UNPRIVILEGED_UID] * 3
    assert report["status"]["NoNewPrivs"] == "1" and report["status"]["CapEff"] == "0000000000000000"
    assert report["core_limit"] == [0, 0]
    assert_no_secret([report["environ"], report["proc_environ"]])
    # Same uid as the service: only Landlock stands between the worker and the database.
    assert all(v.startswith("PermissionError") for v in report["read"].values()), report["read"]
    assert all(v.startswith("PermissionError") for v in report["write"].values()), report["write"]
    assert not (outside / "planted").exists() and not (data_dir / "planted").exists()
    assert report["write_own"] == "ok"
    reach = report["connect"][f"127.0.0.1:{server.port}"]
    assert ("Network is unreachable" in reach) if isolation else reach == "ok"
    assert_no_api_descriptor(server, report["fds"])
    assert_outside_view(server, UNPRIVILEGED_UID)
    security = server.admin.get("/admin/security").json()
    assert security["worker_user"]["on"] is False
    assert security["filesystem"] == {"on": True, "detail": f"Landlock ABI {LANDLOCK_ABI}"}
    assert security["network"]["on"] is isolation


def test_code_the_worker_user_cannot_reach_is_named_with_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supervisor.privileges import WorkerUser, _code_unreachable

    closed = tmp_path / "checkout"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    monkeypatch.chdir(closed)
    stranger = WorkerUser("stranger", os.geteuid() + 4242, os.getegid() + 4242)
    why = _code_unreachable(stranger)
    assert why is not None and "cannot pass through" in why and "chmod o+x /" in why
    assert _code_unreachable(WorkerUser("owner", os.geteuid(), os.getegid())) is None
