"""The HTTP surface against one real server: auth, uploads, events, listing, admin, metrics, and
refusals that change nothing."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.server import ADMIN_TOKEN, Server, until

API_KEY = "key-for-tests-0001"
JWT_SECRET = "supabase-hs256-secret-for-tests-000000"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps(
    {
        "keys": [
            {
                **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())),
                "kid": "k1",
                "alg": "RS256",
            }
        ]
    }
)
KEY_HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def server(make_module_server) -> Server:  # type: ignore[no-untyped-def]
    env = {
        "API_KEYS": f"{API_KEY},another-key",
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "SUPABASE_JWKS": JWKS,
        "MAX_UPLOAD_MB": "1",
        "MAX_BODY_MB": "1",
        "TASK_MODULES": "tests.sample_kinds",
        "DISABLE_OCR": "true",
        "MAX_QUEUE": "50",
    }
    server: Server = make_module_server(env=env, headers=KEY_HEADERS)
    return server.start()


def _token(key: Any = JWT_SECRET, alg: str = "HS256", **claims: Any) -> str:
    body = {"sub": "user-1", "aud": "authenticated", "exp": int(time.time()) + 300, **claims}
    headers = {"kid": "k1"} if alg == "RS256" else None
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def _anonymous(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


# ----- authentication --------------------------------------------------------------------------


def test_users_routes_need_a_key_or_a_supabase_jwt(server: Server) -> None:
    with _anonymous(server) as anon:
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/v1/tasks").status_code == 401
        assert anon.get("/v1/tasks", headers={"X-API-Key": "wrong"}).status_code == 401
        assert anon.get("/v1/tasks", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert anon.get("/v1/tasks", headers={"Authorization": f"Bearer {_token()}"}).status_code == 200
        rs256 = _token(RSA_KEY, "RS256")
        assert anon.get("/v1/tasks", headers={"Authorization": f"Bearer {rs256}"}).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token("another-secret-of-enough-length-000"), id="wrong-signature"),
        pytest.param(_token(exp=int(time.time()) - 10), id="expired"),
        pytest.param(_token(aud="someone-else"), id="wrong-audience"),
        pytest.param(
            jwt.encode({"sub": "x", "aud": "authenticated", "exp": 2**31}, None, algorithm="none"),
            id="alg-none",
        ),
        pytest.param("not.a.jwt", id="garbage"),
        pytest.param(
            _token(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"), id="foreign-rsa"
        ),
    ],
)
def test_bad_tokens_get_401_never_500(server: Server, token: str) -> None:
    with _anonymous(server) as anon:
        response = anon.get("/v1/tasks", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_admin_routes_need_the_admin_token(server: Server) -> None:
    with _anonymous(server) as anon:
        for path in ("/admin/memory", "/admin/workers", "/admin/stats", "/metrics"):
            assert anon.get(path).status_code == 401
            assert anon.get(path, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
            assert anon.get(path, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 401
            assert anon.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


def test_admin_routes_are_absent_without_admin_token(make_server) -> None:  # type: ignore[no-untyped-def]
    server: Server = make_server(env={"ADMIN_TOKEN": ""}).start()
    assert server.client.get("/admin/memory", headers={"Authorization": "Bearer x"}).status_code == 404
    assert server.client.get("/metrics").status_code == 404


# ----- kinds, user modules, switches -----------------------------------------------------------


def test_user_module_kind_runs_and_is_listed(server: Server) -> None:
    kinds = {k["name"]: k for k in server.client.get("/v1/kinds").json()}
    assert kinds["sample.echo"]["enabled"] and kinds["sample.echo"]["input_schema"]["properties"]["text"]
    assert not kinds["sample.switched"]["enabled"] and kinds["sample.switched"]["switch"] == "DISABLE_OCR"
    done = server.wait(server.submit("sample.echo", {"text": "hi"})["id"])
    assert done["result"] == {"text": "hi", "file_bytes": None}


def test_submit_with_wait_answers_in_one_request(server: Server) -> None:
    body = {"kind": "sample.echo", "payload": {"text": "now"}}
    done = server.client.post("/v1/tasks", json=body, params={"wait_s": 30})
    assert done.status_code == 200, "final within wait_s: the result in the submit's own answer"
    assert done.json()["state"] == "succeeded" and done.json()["result"]["text"] == "now"
    slow = {"kind": "diag.sleep", "payload": {"seconds": 3}}
    pending = server.client.post("/v1/tasks", json=slow, params={"wait_s": 0.2})
    assert pending.status_code == 202 and pending.json()["state"] in ("queued", "running")
    assert server.wait(pending.json()["id"])["state"] == "succeeded"
    assert server.client.post("/v1/tasks", json=body, params={"wait_s": -1}).status_code == 422


def test_disabled_kind_is_refused_naming_its_switch(server: Server) -> None:
    response = server.client.post("/v1/tasks", json={"kind": "sample.switched", "payload": {"text": "x"}})
    assert response.status_code == 503
    assert response.json()["switch"] == "DISABLE_OCR"
    assert "DISABLE_OCR" in response.json()["detail"]


# ----- uploads -----------------------------------------------------------------------------------


def _spool_entries(server: Server) -> list[Path]:
    spool = server.data_dir / "spool"
    return sorted(spool.iterdir()) if spool.exists() else []


def test_upload_reaches_the_worker_under_a_safe_name(server: Server) -> None:
    files = {"files": ("../../etc/passwd", b"x" * 1234, "application/octet-stream")}
    data = {"kind": "sample.echo", "payload": json.dumps({"text": "with file"})}
    response = server.client.post("/v1/tasks/upload", data=data, files=files, params={"wait_s": 20})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["state"] == "succeeded"
    assert task["result"] == {"text": "with file", "file_bytes": 1234}
    assert not (server.data_dir.parent / "etc").exists()
    assert task["id"] not in [p.name for p in _spool_entries(server)], "the spool is cleaned when a task ends"


@pytest.mark.parametrize(
    ("files", "data", "status"),
    [
        (
            {"files": ("big.bin", b"x" * (2 * 1024 * 1024), "application/octet-stream")},
            {"kind": "sample.echo"},
            413,
        ),
        ({"files": ("empty.bin", b"", "application/octet-stream")}, {"kind": "sample.echo"}, 422),
        ({"files": ("a.bin", b"abc", "application/octet-stream")}, {"kind": "no.such.kind"}, 422),
        (
            {"files": ("a.bin", b"abc", "application/octet-stream")},
            {"kind": "sample.echo", "payload": "{nope"},
            422,
        ),
        (
            {"files": ("a.bin", b"abc", "application/octet-stream")},
            {"kind": "sample.echo", "payload": "[]"},
            422,
        ),
        (
            {"files": ("a.bin", b"abc", "application/octet-stream")},
            {"kind": "sample.echo", "payload": "{}"},
            422,
        ),
    ],
)
def test_refused_uploads_leave_nothing(server: Server, files: Any, data: Any, status: int) -> None:
    before_tasks = server.client.get("/v1/tasks", params={"limit": 500}).json()["items"]
    before_spool = _spool_entries(server)
    response = server.client.post("/v1/tasks/upload", data=data, files=files)
    assert response.status_code == status, response.text
    assert _spool_entries(server) == before_spool
    assert server.client.get("/v1/tasks", params={"limit": 500}).json()["items"] == before_tasks


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares the given size: enough for a decoder to try to allocate it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_json_body_over_the_limit_is_413(server: Server) -> None:
    body = {"kind": "sample.echo", "payload": {"text": "x" * (2 * 1024 * 1024)}}
    assert server.client.post("/v1/tasks", json=body).status_code == 413


def test_malformed_json_is_422(server: Server) -> None:
    response = server.client.post(
        "/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


# ----- events, listing, waiting ---------------------------------------------------------------


def test_events_stream_states_and_progress_until_final(server: Server) -> None:
    # 2 s to allocate: the stream is open before the progress it must carry (none is replayed)
    task = server.submit("diag.alloc", {"mb": 20, "rate_mb_s": 10, "hold_s": 0.5})
    events: list[tuple[str, Any]] = []
    with server.client.stream("GET", f"/v1/tasks/{task['id']}/events", timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
    states = [data["state"] for name, data in events if name == "state"]
    assert states[-1] == "succeeded"
    assert events[-1][1]["result"] == {"allocated_mb": 20}
    assert any(name == "progress" and data["message"] == "allocated" for name, data in events)


def test_list_filters_and_pages(server: Server) -> None:
    ids = [server.submit("sample.echo", {"text": str(i)})["id"] for i in range(3)]
    for task_id in ids:
        server.wait(task_id)
    page = server.client.get(
        "/v1/tasks", params={"kind": "sample.echo", "state": "succeeded", "limit": 2}
    ).json()
    assert len(page["items"]) == 2 and all(t["kind"] == "sample.echo" for t in page["items"])
    rest = server.client.get("/v1/tasks", params={"kind": "sample.echo", "limit": 2, "offset": 2}).json()
    assert {t["id"] for t in page["items"]}.isdisjoint({t["id"] for t in rest["items"]})
    assert server.client.get("/v1/tasks", params={"state": "nonsense"}).status_code == 422
    assert server.client.get("/v1/tasks", params={"limit": 0}).status_code == 422


# ----- admin ---------------------------------------------------------------------------------


def test_stats_and_metrics_count_outcomes(server: Server) -> None:
    server.wait(server.submit("diag.raise", {"message": "for stats"})["id"])
    stats = server.admin.get("/admin/stats").json()
    assert stats["tasks_by_kind"]["diag.raise"]["failed"] >= 1
    assert stats["run_s"]["p50"] is not None
    metrics = server.admin.get("/metrics").text
    assert 'memvisor_tasks_total{kind="diag.raise",state="failed"}' in metrics
    assert "memvisor_memory_budget_mb" in metrics


def test_limits_are_validated_and_applied_at_run_time(server: Server) -> None:
    before = server.admin.get("/admin/limits").json()
    bad = server.admin.patch("/admin/limits", json={"poll_interval_ms": 5, "fast_poll_interval_ms": 50})
    assert bad.status_code == 422 and "FAST_POLL_INTERVAL_MS" in bad.json()["detail"]
    assert server.admin.patch("/admin/limits", json={"no_such_limit": 1}).status_code == 422
    assert (
        server.admin.patch("/admin/limits", json={"kind_ceilings_mb": {"sample.echo": -1}}).status_code == 422
    )
    assert server.admin.get("/admin/limits").json() == before
    changed = server.admin.patch("/admin/limits", json={"kind_ceilings_mb": {"diag.alloc": 100}}).json()
    assert changed["kind_ceilings_mb"] == {"diag.alloc": 100}
    done = server.wait(server.submit("diag.alloc", {"mb": 150, "hold_s": 2})["id"])
    assert (done["state"], done["reason"], done["ceiling_mb"]) == ("killed", "memory_ceiling", 100)


def test_drain_refuses_new_work_and_resume_admits_again(server: Server) -> None:
    assert server.admin.post("/admin/drain").json()["draining"] is True
    refused = server.client.post("/v1/tasks", json={"kind": "sample.echo", "payload": {"text": "x"}})
    assert refused.status_code == 503 and "Retry-After" in refused.headers
    server.admin.post("/admin/resume")
    assert server.wait(server.submit("sample.echo", {"text": "after"})["id"])["state"] == "succeeded"


def test_full_queue_is_429_with_retry_after(server: Server) -> None:
    server.admin.patch("/admin/limits", json={"max_queue": 2, "max_concurrency": 1})
    blockers = [server.submit("diag.sleep", {"seconds": 30})]
    try:
        # The queue is in the database: the first is claimed a moment after it was accepted.
        until(lambda: server.task(blockers[0]["id"])["state"] == "running", 15, "the first to run")
        blockers += [server.submit("diag.sleep", {"seconds": 30}) for _ in range(2)]
        response = server.client.post("/v1/tasks", json={"kind": "sample.echo", "payload": {"text": "x"}})
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        server.admin.patch("/admin/limits", json={"max_queue": 50, "max_concurrency": 16})
        for task in blockers:
            server.client.delete(f"/v1/tasks/{task['id']}")
    assert all(server.wait(t["id"])["state"] == "cancelled" for t in blockers)
