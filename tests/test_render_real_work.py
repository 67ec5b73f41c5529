"""The Render test with real work: inside a real 512 MB memory cgroup, 5 OCR, 10 RAG and 5 agent tasks
submitted at once all succeed; the cgroup's OOM-kill counter stays 0 and its peak stays under 512 MB.
Run in Render mode (uid 10001, no writable cgroup, 0.5 CPU, RLIMIT_DATA in every worker: onnxruntime
and numpy run under it) and in lab mode (root, a cgroup per worker)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from harness.cgroup import Mode
from harness.server import Server
from tests.kinds_data import DOCUMENTS, OCR_LINES, QUESTIONS, text_png
from tests.test_memory_enforcement import HealthProbe

pytest.importorskip("chromadb", reason="the rag and agent kinds need the rag extra")
pytest.importorskip("onnxruntime", reason="the ocr and rag kinds need onnxruntime")


def _burst(server: Server) -> list[tuple[str, Any]]:
    """(kind, request) for 5 OCR, 5 ingests + 5 queries, and 5 agent questions."""
    image = text_png(OCR_LINES)
    jobs: list[tuple[str, Any]] = [
        ("ocr", {"files": {"file": (f"p{i}.png", image, "image/png")}}) for i in range(5)
    ]
    for i in range(5):
        ingest = {"collection": f"burst{i}", "documents": DOCUMENTS}
        jobs.append(("rag.ingest", {"json": ingest}))
    for doc_id, question in QUESTIONS.items():
        jobs.append(
            ("rag.query", {"json": {"collection": "base", "query": question, "k": 1}, "expect": doc_id})
        )
        jobs.append(("agent", {"json": {"question": question, "collection": "base"}, "expect": doc_id}))
    return jobs


ROUTES = {
    "ocr": "/v1/ocr",
    "rag.ingest": "/v1/rag/ingest",
    "rag.query": "/v1/rag/query",
    "agent": "/v1/agent",
}


def _submit(server: Server, kind: str, request: dict[str, Any]) -> str:
    args = {k: v for k, v in request.items() if k != "expect"}
    response = server.client.post(ROUTES[kind], **args)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _check(kind: str, request: dict[str, Any], task: dict[str, Any]) -> None:
    assert task["state"] == "succeeded", task
    result = task["result"]
    if kind == "ocr":
        assert OCR_LINES[0] in result["text"].lower()
    elif kind == "rag.query":
        assert result["matches"][0]["id"] == request["expect"]
    elif kind == "agent":
        assert request["expect"] in result["sources"]


@pytest.mark.cgroup
def test_real_work_fits_in_512_mb(service_mode: Mode, make_server) -> None:  # type: ignore[no-untyped-def]
    render_cgroup = service_mode.group
    server: Server = make_server(
        env=service_mode.env, data_dir=service_mode.data_dir, wrap=service_mode.wrap()
    )
    server.start(ready_timeout_s=60)
    assert server.memory()["limit_source"] == "cgroup v1"
    kinds = {k["name"] for k in server.client.get("/v1/kinds").json()}
    if not {"ocr", "rag.ingest", "agent"} <= kinds:
        pytest.skip(f"needs the ocr, rag and agent kinds; this install has {sorted(kinds)}")
    base = server.client.post("/v1/rag/ingest", json={"collection": "base", "documents": DOCUMENTS})
    assert server.wait(base.json()["id"], timeout_s=300)["state"] == "succeeded"
    jobs = _burst(server)
    with HealthProbe(server.url) as health, ThreadPoolExecutor(len(jobs)) as pool:
        ids = list(pool.map(lambda job: _submit(server, *job), jobs))
        done = [server.wait(task_id, timeout_s=900) for task_id in ids]
    peaks = {
        kind: max(t["peak_rss_mb"] for (k, _), t in zip(jobs, done, strict=True) if k == kind)
        for kind in ROUTES
    }
    print(f"{service_mode.name}: peaks by kind (MB): {peaks}; max usage {render_cgroup.max_usage_mb:.0f} MB")
    for (kind, request), task in zip(jobs, done, strict=True):
        _check(kind, request, task)
    assert len(done) == 20
    assert render_cgroup.oom_kills == 0
    assert render_cgroup.max_usage_mb < 512
    assert health.failures == 0 and health.slowest_s < 5
