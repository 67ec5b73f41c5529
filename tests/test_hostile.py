"""Hostile input that does not come through HTTP: frames forged onto the worker socket, file
permissions of the runtime directory, and secrets that must never reach the logs."""

from __future__ import annotations

import grp
import os
import pickle
import stat
import time
from pathlib import Path

import httpx
import jwt
import msgpack
import zmq

from harness.server import ADMIN_TOKEN, Server, passable_for_workers, until

API_KEY = "hostile-test-api-key-1234"
JWT_SECRET = "hostile-test-jwt-secret-0000000000"


def _send_all(endpoint: str, identity: bytes | None, frames: list[bytes]) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 1000)
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint)
    for frame in frames:
        sock.send(frame)
    sock.close()
    ctx.term()


def _private(path: Path) -> bool:
    """Nothing for others; for the group only where it is the workers' own (a root service's workers
    run as their own user, and must reach the socket)."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o007:
        return False
    try:
        workers_gid = grp.getgrnam("memvisor-worker").gr_gid
    except KeyError:
        workers_gid = None
    return not mode & 0o070 or (os.geteuid() == 0 and info.st_gid == workers_gid)


def test_forged_frames_on_the_worker_socket_do_no_harm(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runtime = tmp_path / "runtime"
    passable_for_workers(tmp_path)  # a root service's workers, as their own user, reach the socket
    server: Server = make_server(env={"RUNTIME_DIR": str(runtime)}).start()
    socket_path = runtime / "broker.sock"
    assert _private(runtime) and _private(socket_path)
    running = server.submit("diag.sleep", {"seconds": 2})
    until(lambda: server.task(running["id"])["state"] == "running", 15, "the task to run")
    forged_result = msgpack.packb({"type": "result", "result": {"forged": True}})
    hostile = [
        pickle.dumps({"type": "result", "result": "pickled"}),
        b"\x80\x04garbage that is not msgpack",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"type": "task", "payload": {}}),
        forged_result,
        b"",
    ]
    endpoint = f"ipc://{socket_path}"
    _send_all(endpoint, None, hostile)
    # Same routing id as the running worker: the ROUTER keeps the first peer and ignores this one.
    _send_all(endpoint, f"{running['id']}:1".encode(), [forged_result])
    _send_all(
        endpoint, f"{running['id']}:2".encode(), [msgpack.packb({"type": "ready", "pid": 1}), forged_result]
    )
    done = server.wait(running["id"])
    assert done["state"] == "succeeded" and done["result"] == {"slept_s": 2.0}
    assert server.wait(server.submit("diag.sleep")["id"])["state"] == "succeeded"
    log = server.log()
    assert "dropped a frame" in log and "unknown worker" in log


def test_no_secret_reaches_the_logs(make_server) -> None:  # type: ignore[no-untyped-def]
    env = {"API_KEYS": API_KEY, "SUPABASE_JWT_SECRET": JWT_SECRET, "LOG_LEVEL": "debug"}
    server: Server = make_server(env=env, headers={"X-API-Key": API_KEY}).start()
    token = jwt.encode({"sub": "u", "aud": "authenticated", "exp": int(time.time()) + 60}, JWT_SECRET)
    with httpx.Client(base_url=server.url) as anon:
        anon.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
        anon.get("/v1/tasks", headers={"X-API-Key": API_KEY + "x"})
        anon.get("/admin/memory", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"})
    server.admin.get("/admin/memory")
    server.wait(server.submit("diag.raise", {"message": "boom"})["id"])
    server.stop()
    log = server.log_path.read_text()
    for secret in (API_KEY, JWT_SECRET, ADMIN_TOKEN, token):
        assert secret not in log
