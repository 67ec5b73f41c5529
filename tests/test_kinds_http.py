"""The built-in kinds through their HTTP routes, in real workers: OCR of images of known text, RAG
that finds a paraphrased question's document, and an agent that cites it. Refused uploads too."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from harness.server import Server
from tests.kinds_data import DOCUMENTS, OCR_LINES, QUESTIONS, text_png

pytest.importorskip("chromadb", reason="the rag and agent kinds need the rag extra")
pytest.importorskip("onnxruntime", reason="the ocr and rag kinds need onnxruntime")


@pytest.fixture(scope="module")
def server(make_module_server) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    started: Server = make_module_server(env={"MAX_UPLOAD_MB": "4"}).start()
    kinds = {k["name"] for k in started.client.get("/v1/kinds").json()}
    if "ocr" not in kinds:
        pytest.skip("the ocr kind is not installed (pip install '.[ocr]')")
    yield started


def _ok(server: Server, response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 202), response.text
    done = server.wait(response.json()["id"], timeout_s=600)
    assert done["state"] == "succeeded", (done["error"], done["reason"], done["peak_rss_mb"], done)
    return done


def test_ocr_reads_an_uploaded_image(server: Server) -> None:
    files = {"file": ("lines.png", text_png(OCR_LINES), "image/png")}
    done = _ok(server, server.client.post("/v1/ocr", files=files))
    text = done["result"]["text"].lower()
    for line in OCR_LINES:
        assert line in text, text
    assert all(0 <= line["confidence"] <= 1 and len(line["box"]) == 4 for line in done["result"]["lines"])
    assert done["peak_rss_mb"] <= done["ceiling_mb"]


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00" * 64


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (_png_header(100_000, 100_000), 413),  # a decompression bomb, refused from its header
        (b"%PDF-1.4 not an image at all", 415),
        (b"\x89PNG\r\n\x1a\n truncated", 415),
    ],
)
def test_ocr_refuses_bombs_and_non_images_before_any_task(
    server: Server, content: bytes, status: int
) -> None:
    before = server.client.get("/v1/tasks", params={"kind": "ocr", "limit": 500}).json()["items"]
    response = server.client.post("/v1/ocr", files={"file": ("x.png", content, "image/png")})
    assert response.status_code == status, response.text
    assert server.client.get("/v1/tasks", params={"kind": "ocr", "limit": 500}).json()["items"] == before


def test_rag_finds_the_paraphrased_document_and_the_agent_cites_it(server: Server) -> None:
    _ok(server, server.client.post("/v1/rag/ingest", json={"collection": "facts", "documents": DOCUMENTS}))
    for doc_id, question in QUESTIONS.items():
        body = {"collection": "facts", "query": question, "k": 3}
        matches = _ok(server, server.client.post("/v1/rag/query", json=body))["result"]["matches"]
        assert matches[0]["id"] == doc_id, (question, [m["id"] for m in matches])
    answer = _ok(
        server, server.client.post("/v1/agent", json={"question": QUESTIONS["orbit"], "collection": "facts"})
    )
    assert "orbit" in answer["result"]["sources"]
    assert "ninety minutes" in answer["result"]["answer"]
    assert answer["result"]["steps"]
