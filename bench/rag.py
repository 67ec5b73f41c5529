"""Scenario 6, RAG store: the rag kinds' worker peaks with the local store against the same tasks with
the HTTP client of a shared Chroma server (``CHROMA_URL``), and that server's own memory.

The service runs twice (in its 512 MB container where one can be made), once per store, against one
``chroma run`` started here (harness/chroma.py). Each repeat is an ingest of ``DOCUMENTS`` short
documents and a query, each a task in a fresh worker; the peak is the task's ``peak_rss_mb`` (the
watchdog's reading of the worker's process tree). A warm-up ingest first builds the data dir's
low-memory model cache, which the measured tasks then share. The server's RSS (VmRSS of ``chroma
run``) is read idle, after ``SERVER_LOAD_DOCUMENTS`` more documents went in through the service, and as
one collection grows to ``GROWTH_CHUNKS`` stored chunks (the figures that size its Render plan).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from bench.plan import Context, Plan
from bench.probes import status_mb
from bench.service import container, kinds, run_task, server
from bench.stats import fmt, ratio, spread, times
from harness.server import Server

DOCUMENTS = 50
GROWTH_CHUNKS = (10_000, 30_000)
DIMENSIONS = 384  # all-MiniLM-L6-v2
SERVER_LOAD_DOCUMENTS = 1_000
BATCH = 200  # the most documents one rag.ingest takes
TASK_TIMEOUT_S = 300
TOPICS = {
    "mars": "Mars is the fourth planet from the Sun. Iron oxide dust covers its surface and gives it a "
    "reddish colour; two small moons, Phobos and Deimos, orbit it.",
    "sourdough": "To bake sourdough bread, feed the starter the day before, mix flour, water and salt, let "
    "the dough rise slowly overnight, then bake it in a very hot Dutch oven.",
    "tax": "Income tax returns must be filed with the revenue service by the April deadline; self-employed "
    "workers also pay quarterly estimated taxes to avoid penalties.",
    "lists": "Python lists are dynamic arrays: appending at the end takes amortised constant time, while "
    "inserting at the front is linear in the length of the list.",
    "sleep": "Adults need seven to nine hours of sleep. A regular bedtime and no screens in the evening "
    "improve sleep quality.",
    "photosynthesis": "In photosynthesis, chlorophyll in the leaves captures sunlight, and the plant uses "
    "that energy to make glucose from carbon dioxide and water, releasing oxygen.",
    "volcano": "A volcano erupts when pressure from gases and molten rock beneath the crust forces magma "
    "up through vents, spreading lava and ash over the surrounding land.",
    "bicycle": "To fix a flat bicycle tyre, remove the wheel, lever the tyre off the rim, find the puncture "
    "in the inner tube, patch it, and pump the tube back up.",
    "vaccines": "Vaccines train the immune system by exposing it to a harmless piece or weakened form of a "
    "pathogen, so that the body recognises and fights the real infection later.",
    "inflation": "Inflation is the general rise of prices over time; central banks raise interest rates "
    "to slow borrowing and spending when inflation runs too high.",
}
PARAPHRASES = [
    ("Why does the red planet look rusty?", "mars"),
    ("What is the process for making a loaf at home?", "sourdough"),
    ("When do I have to send my yearly earnings declaration to the government?", "tax"),
    ("What does it cost to add an item to the end of a dynamic array?", "lists"),
    ("How long should grown-ups rest each night?", "sleep"),
    ("How do green plants turn light into food?", "photosynthesis"),
    ("What makes a mountain spew molten rock?", "volcano"),
    ("How do I repair a punctured tube on my bike?", "bicycle"),
    ("How do jabs protect people from disease?", "vaccines"),
    ("Why do central banks put up borrowing costs when everything gets more expensive?", "inflation"),
]


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    try:
        from harness.chroma import ChromaServer

        chroma = ChromaServer()
    except (ImportError, FileNotFoundError) as exc:
        return {"skipped": f"no Chroma server can be started here: {exc}"}
    try:
        server_mb: dict[str, Any] = {"idle": status_mb(chroma.pid, "VmRSS")}
        runs: dict[str, list[dict[str, Any]]] = {}
        for store, env in (("local", {"CHROMA_URL": ""}), ("http", {"CHROMA_URL": chroma.url})):
            with container() as box, server(ctx.work_dir / f"rag-{store}", box, env) as srv:
                if "rag.ingest" not in kinds(srv):
                    return {"skipped": "the service does not offer the rag kinds (GET /v1/kinds)"}
                _task(srv, "rag.ingest", _ingest(f"warmup-{store}", 1))
                runs[store] = [_repeat(srv, f"bench-{store}-{n}") for n in range(plan.repeats)]
                if store == "http":
                    for start in range(0, SERVER_LOAD_DOCUMENTS, BATCH):
                        _task(srv, "rag.ingest", _ingest("server-load", BATCH, first=start))
        server_mb["documents"] = 1 + plan.repeats * DOCUMENTS + SERVER_LOAD_DOCUMENTS
        server_mb["loaded"] = status_mb(chroma.pid, "VmRSS")
        server_mb["growth"] = _grow_server(chroma)
        server_mb["peak"] = status_mb(chroma.pid, "VmHWM")
    finally:
        chroma.close()
    return {"runs": runs, "server_rss_mb": server_mb, "summary": summarize(runs, server_mb)}


def _repeat(srv: Server, collection: str) -> dict[str, Any]:
    ingest = _task(srv, "rag.ingest", _ingest(collection, DOCUMENTS))
    query = _task(srv, "rag.query", {"collection": collection, "query": PARAPHRASES[0][0], "k": 3})
    return {"ingest_peak_mb": ingest["peak_rss_mb"], "query_peak_mb": query["peak_rss_mb"]}


def _grow_server(chroma: Any) -> dict[int, float | None]:
    """The server's RSS as one collection grows to GROWTH_CHUNKS chunks: stored vectors (random, of
    MiniLM's size; no embedding needed to size the server) with their short texts and metadata."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(
        host="127.0.0.1", port=chroma.port, settings=Settings(anonymized_telemetry=False)
    )
    collection = client.create_collection("growth", embedding_function=None)
    rnd, stored, figures = random.Random(1), 0, {}
    for target in GROWTH_CHUNKS:
        for start in range(stored, target, BATCH):
            ids = [f"g{i}" for i in range(start, min(start + BATCH, target))]
            collection.add(
                ids=ids,
                embeddings=[[rnd.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in ids],  # type: ignore[arg-type]
                documents=[f"Note {i} about harbours, tides and the boats that wait for them." for i in ids],
                metadatas=[{"_parent": i, "_chunk": 0, "_chunks": 1} for i in ids],
            )
        stored = target
        collection.query(query_embeddings=[[0.1] * DIMENSIONS], n_results=3)  # type: ignore[arg-type]
        figures[target] = status_mb(chroma.pid, "VmRSS")
    return figures


def _ingest(collection: str, count: int, first: int = 0) -> dict[str, Any]:
    texts = itertools.cycle(TOPICS.values())
    documents = [{"id": f"d{i}", "text": f"Note {i}. {next(texts)}"} for i in range(first, first + count)]
    return {"collection": collection, "documents": documents}


def _task(srv: Server, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    done = run_task(srv, kind, payload, TASK_TIMEOUT_S)
    if done["state"] != "succeeded":
        raise RuntimeError(f"{kind} ended {done['state']}: {done.get('error')}")
    return done


def summarize(runs: dict[str, list[dict[str, Any]]], server_mb: dict[str, Any]) -> dict[str, Any]:
    keys = ("ingest_peak_mb", "query_peak_mb")
    rows: list[dict[str, Any]] = [
        {"store": store, **{key: spread(r[key] for r in repeats) for key in keys}}
        for store, repeats in runs.items()
    ]
    by_store = {row["store"]: row for row in rows}
    ratios = {
        key: times(ratio(by_store["http"][key]["median"], by_store["local"][key]["median"])) for key in keys
    }
    growth = ", ".join(f"{fmt(mb)} MB at {int(n):,}" for n, mb in server_mb["growth"].items())
    serving = (
        f"`chroma run`: {fmt(server_mb['idle'])} MB RSS idle, {fmt(server_mb['loaded'])} MB after this "
        f"scenario's {server_mb['documents']:,} documents; one collection of stored chunks: {growth} "
        f"(peak {fmt(server_mb['peak'])} MB)."
    )
    return {"rows": rows, "ratios": [{"store": "HTTP / local", **ratios}], "server": serving}
