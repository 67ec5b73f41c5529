"""One Chroma store for every instance: real services (harness.server.Server) against a real `chroma run`.

Each instance has its own DATA_DIR, as separate machines would; what one ingests another finds only
through the shared server. The server is session-scoped (tests/conftest.py ``chroma``): every test
uses collections of its own, and a test that stops it starts it again.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.chroma import ChromaServer
from harness.server import ROOT, Server
from tests.conftest import ServerFactory
from tests.test_rag_kind import CORPUS, PARAPHRASES
from workers.config import KindSettings, normalise_chroma_url

pytest.importorskip("chromadb", reason="chromadb is needed by the rag kinds and ships `chroma run`")

TASK_DEADLINE_S = 180.0
PER_INSTANCE = 50


def collection_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def shared_instances(make_server: ServerFactory, chroma: ChromaServer, count: int) -> list[Server]:
    return [make_server(env={"CHROMA_URL": chroma.url}).start() for _ in range(count)]


def succeeded(server: Server, task: dict[str, Any]) -> dict[str, Any]:
    done = server.wait(task["id"], TASK_DEADLINE_S)
    assert done["state"] == "succeeded", (done, server.log())
    return done


def server_ids(chroma: ChromaServer, collection: str) -> list[str]:
    """The ids stored on the server, read with Chroma's own client (nothing of ours in between)."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma.port, settings=Settings(anonymized_telemetry=False)
    )
    return sorted(client.get_collection(collection, embedding_function=None).get(include=[])["ids"])


def test_ingested_through_one_instance_found_through_another(
    make_server: ServerFactory, chroma: ChromaServer
) -> None:
    writer, reader = shared_instances(make_server, chroma, 2)
    name = collection_name("shared")
    succeeded(writer, writer.submit("rag.ingest", {"collection": name, "documents": CORPUS}))
    for question, expected in PARAPHRASES:
        response = reader.client.post(
            "/v1/rag/query", params={"wait_s": 60}, json={"collection": name, "query": question, "k": 3}
        )
        assert response.status_code == 200, response.text
        task = response.json()
        assert task["state"] == "succeeded", task
        assert task["result"]["matches"][0]["id"] == expected, task["result"]
    # Neither instance kept vectors of its own.
    # Neither wrote a local store (its directory may exist, prepared for the workers, but stays empty).
    for server in (writer, reader):
        local = server.data_dir / "chroma"
        assert not (local.exists() and any(local.iterdir())), list(local.iterdir())
    store = reader.admin.get("/admin/stats").json()["vector_store"]
    assert store == {"kind": "chroma-server", "location": chroma.url, "warning": None}


def test_two_instances_ingesting_one_collection_at_once_lose_nothing(
    make_server: ServerFactory, chroma: ChromaServer
) -> None:
    instances = shared_instances(make_server, chroma, 2)
    name = collection_name("concurrent")
    payloads = [
        {
            "collection": name,
            "documents": [
                {"id": f"i{n}-d{i}", "text": f"Field report {i} from instance {n}: the river rose again."}
                for i in range(PER_INSTANCE)
            ],
        }
        for n in range(len(instances))
    ]
    # Both queued before either is waited on: the two workers write the collection at the same time.
    pairs = zip(instances, payloads, strict=True)
    tasks = [server.submit("rag.ingest", payload) for server, payload in pairs]
    done = [succeeded(server, task) for server, task in zip(instances, tasks, strict=True)]
    results = [task["result"] for task in done]
    print("ingests ran", [(task["started_at"], task["finished_at"]) for task in done])
    assert [r["chunks"] for r in results] == [PER_INSTANCE, PER_INSTANCE]
    expected = sorted(f"i{n}-d{i}#0" for n in range(len(instances)) for i in range(PER_INSTANCE))
    assert server_ids(chroma, name) == expected


def _wait_for_progress(server: Server, task_id: str, message: str) -> None:
    """Read the task's event stream until the worker reports ``message`` (the task is then running)."""
    with server.client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=TASK_DEADLINE_S) as response:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "progress":
                if json.loads(line.split(":", 1)[1]).get("message") == message:
                    return
            elif line.startswith("data:") and event == "state":
                state = json.loads(line.split(":", 1)[1])["state"]
                assert state in ("queued", "running"), f"task ended before {message!r}: {line}"
    raise AssertionError(f"the event stream ended before {message!r}")


def test_server_down_mid_task_is_a_clear_failure_and_a_new_submit_succeeds_after(
    make_server: ServerFactory, chroma: ChromaServer
) -> None:
    server = shared_instances(make_server, chroma, 1)[0]
    name = collection_name("outage")
    words = " ".join(f"sentence{i} about tides, harbours and the ships waiting." for i in range(14))
    payload = {"collection": name, "documents": [{"id": f"d{i}", "text": words} for i in range(40)]}
    task = server.submit("rag.ingest", payload)
    try:
        # "chunked" comes before the model loads and embeds: the store is reached only after that.
        _wait_for_progress(server, task["id"], "chunked")
        chroma.stop()
        failed = server.wait(task["id"], TASK_DEADLINE_S)
        # The API never talks to the store: it serves, and other kinds run, while the server is down.
        assert server.client.get("/healthz").status_code == 200
        assert succeeded(server, server.submit("diag.sleep", {"seconds": 0}))
    finally:
        chroma.start()
    assert (failed["state"], failed["reason"]) == ("failed", "error"), failed
    assert failed["error"]["type"] == "VectorStoreUnavailableError"
    assert f"CHROMA_URL={chroma.url}" in failed["error"]["message"]
    # The store being away may pass: rag.ingest is retriable, so every attempt was made (MAX_ATTEMPTS,
    # 3 by default), each failing while the server stayed down.
    assert failed["attempts"] == 3
    again = succeeded(server, server.submit("rag.ingest", payload))
    assert again["result"]["collection_chunks"] == again["result"]["chunks"] == 40  # one chunk each
    assert len(server_ids(chroma, name)) == again["result"]["chunks"]


def test_split_role_without_chroma_url_refuses_rag_kinds(make_server: ServerFactory) -> None:
    """An api instance (a worker instance serves /healthz only, so its requests come this way)."""
    server = make_server(env={"ROLE": "api", "CHROMA_URL": ""}).start()
    query = {"collection": "docs", "query": "anything", "k": 1}
    for response in (
        server.client.post("/v1/tasks", json={"kind": "rag.query", "payload": query}),
        server.client.post("/v1/rag/ingest", json={"collection": "docs", "documents": CORPUS[:1]}),
    ):
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["switch"] == "CHROMA_URL"
        assert "needs CHROMA_URL when ROLE=api" in body["detail"]
    kinds = {k["name"]: k for k in server.client.get("/v1/kinds").json()}
    assert not kinds["rag.delete"]["enabled"] and kinds["diag.sleep"]["enabled"]
    assert server.submit("diag.sleep", {"seconds": 0})["state"] == "queued"  # other kinds are accepted


def test_shared_database_with_a_local_store_is_reported(make_server: ServerFactory, postgres: Any) -> None:
    server = make_server(env={"DATABASE_URL": postgres.new_database(), "CHROMA_URL": ""}).start()
    store = server.admin.get("/admin/memory").json()["vector_store"]
    assert store["kind"] == "local" and store["location"] == str(server.data_dir / "chroma")
    assert "set CHROMA_URL" in store["warning"]
    assert f"vector store: {store['warning']}" in server.log()
    assert server.admin.get("/admin/stats").json()["vector_store"] == store


# ---------------------------------------------------------------------------------------------------
# Settings: pure checks, no server.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://chroma:8000", "http://chroma:8000"),
        ("chroma-abc1:10000", "http://chroma-abc1:10000"),  # Render's fromService hostport
        ("http://127.0.0.1", "http://127.0.0.1:8000"),
        ("https://chroma.example.com/", "https://chroma.example.com:443"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_chroma_url_forms(value: str, expected: str) -> None:
    assert KindSettings(chroma_url=value).chroma_url == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://chroma:8000", "http:// or https://"),
        ("http://chroma:notaport", "is not a URL"),
        ("http://user:pw@chroma:8000", "must not carry credentials"),
        ("http://chroma:8000/api/v2", "scheme://host[:port] only"),
        ("http://:8000", "names no host"),
    ],
)
def test_bad_chroma_url_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        KindSettings(chroma_url=value)
    assert "pw@" not in caught.value.errors()[0]["msg"]  # ValidationError


@given(host=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), port=st.integers(1, 65535))
def test_normalised_url_is_stable(host: str, port: int) -> None:
    once = normalise_chroma_url(f"{host}:{port}")
    assert once == f"http://{host}:{port}" == normalise_chroma_url(once)


def test_role_is_validated_and_decides_the_refusal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'all', 'api' or 'worker'"):
        KindSettings(role="boss")
    assert KindSettings(role=" Worker ").missing_settings()["DISABLE_RAG"][0] == "CHROMA_URL"
    assert KindSettings(role="worker", chroma_url="chroma:8000").missing_settings() == {}
    assert KindSettings(role="api").missing_settings()["DISABLE_RAG"][0] == "CHROMA_URL"
    assert KindSettings(role="all").missing_settings() == {}
    postgres_url = "postgresql://u@db/x"
    assert KindSettings().vector_store(tmp_path, postgres_url)["warning"]
    assert KindSettings(disable_rag=True).vector_store(tmp_path, postgres_url)["warning"] is None
    assert KindSettings().vector_store(tmp_path, None)["warning"] is None
    assert KindSettings(chroma_url="c:1").vector_store(tmp_path, postgres_url)["warning"] is None


def test_blueprint_points_the_web_service_at_its_chroma_server() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a chromadb dependency) reads render.yaml")
    services = {s["name"]: s for s in yaml.safe_load((ROOT / "render.yaml").read_text())["services"]}
    web = next(s for s in services.values() if s["type"] == "web")
    (source,) = [e["fromService"] for e in web["envVars"] if e["key"] == "CHROMA_URL"]
    chroma = services[source["name"]]
    assert (source["type"], source["property"], chroma["type"]) == ("pserv", "hostport", "pserv")
    command = chroma["dockerCommand"].split()
    assert command[:2] == ["chroma", "run"] and "0.0.0.0" in command
    assert command[command.index("--path") + 1].startswith(chroma["disk"]["mountPath"] + "/")
    port = command[command.index("--port") + 1]
    assert KindSettings(chroma_url=f"{source['name']}:{port}").chroma_url == f"http://memvisor-chroma:{port}"
