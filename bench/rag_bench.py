"""Memory and speed of the rag kinds, each measurement in a fresh process (as a worker runs).

    python bench/rag_bench.py [--out results.json]

Scenarios (every row is its own subprocess, started with MALLOC_ARENA_MAX=2 as the supervisor does):

- ``prepare``: building the low-memory model once per data dir (``embedding.cached_lowmem_model``).
- ``ingest`` / ``query`` / ``agent``: the kind functions themselves, cold (first call in the process:
  imports and model load included) then warm (second call, same process). Peak RSS is the process's
  VmHWM; the warm peak is measured after resetting VmHWM (``/proc/self/clear_refs``). A worker runs
  one task, so the cold figures are the ones a task costs; the warm call starts with chromadb already
  resident and reloads the released ONNX session on top of it, so its peak is higher (that is what
  a warm-reused worker would cost).
- ``levels``: the embedder alone, for each ONNX Runtime graph optimisation level and for the packaged
  model vs the low-memory rewrite: session load time, first query, embedding the 50 documents, peak
  RSS, retrieval quality (top-1 and MRR of paraphrased questions over the corpus) and the largest
  difference of its vectors from the reference (packaged model, ``disable``).
- ``chroma-default``: Chroma's own default embedding function, if it can run offline here (it
  downloads its model on first use; if it cannot, the row says so instead of a figure).

Times are wall seconds and CPU seconds (user+sys) of the process: on a shared machine CPU time is the
steadier of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 600.0
LEVELS = ("disable", "basic", "extended", "all")

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
NOTES = [
    "This note was written for a reference handbook.",
    "Teachers often use this example in class.",
    "The topic comes up in everyday conversation.",
    "Several encyclopaedias describe it the same way.",
    "It is a common question from curious readers.",
]


def documents(collection_tag: str) -> list[dict[str, Any]]:
    """50 documents: each topic five times, with a different trailing sentence (about 45 words each)."""
    return [
        {"id": f"{topic}-{i}", "text": f"{text} {note}", "metadata": {"set": collection_tag}}
        for topic, text in TOPICS.items()
        for i, note in enumerate(NOTES)
    ]


# ---------------------------------------------------------------------------------------------------
# Measurement helpers (used in the children).


def status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def measured(into: dict[str, Any], name: str) -> Iterator[None]:
    wall, cpu = time.perf_counter(), cpu_s()
    yield
    into[f"{name}_wall_s"] = round(time.perf_counter() - wall, 3)
    into[f"{name}_cpu_s"] = round(cpu_s() - cpu, 3)
    into[f"{name}_peak_mb"] = round(status_mb("VmHWM"), 1)


def ctx_for(data_dir: Path) -> Any:
    from workers.registry import TaskContext

    return TaskContext("bench", data_dir, data_dir / "spool", lambda event: None)


# ---------------------------------------------------------------------------------------------------
# Children: each prints one JSON object.


def child_prepare(data_dir: Path) -> dict[str, Any]:
    from workers.embedding import cached_lowmem_model

    out: dict[str, Any] = {}
    with measured(out, "prepare"):
        path = cached_lowmem_model(data_dir / "models")
    out["model"] = path.name
    # The rewrite runs in a grandchild (so that onnx never loads into a worker): its own peak.
    out["rewrite_process_peak_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def _two_calls(cold: Callable[[], Any], warm: Callable[[], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with measured(out, "cold"):
        cold()
    reset_peak()
    with measured(out, "warm"):
        warm()
    return out


def child_ingest(data_dir: Path) -> dict[str, Any]:
    from workers.rag import RagIngest, rag_ingest

    ctx = ctx_for(data_dir)
    first = RagIngest.model_validate({"collection": "bench", "documents": documents("a")})
    second = RagIngest.model_validate({"collection": "bench-b", "documents": documents("b")})
    return _two_calls(lambda: rag_ingest(first, ctx), lambda: rag_ingest(second, ctx))


def child_query(data_dir: Path) -> dict[str, Any]:
    from workers.rag import RagQuery, rag_query

    ctx = ctx_for(data_dir)
    queries = [RagQuery(collection="bench", query=q, k=5) for q, _ in PARAPHRASES[:2]]
    out = _two_calls(lambda: rag_query(queries[0], ctx), lambda: rag_query(queries[1], ctx))
    top = [
        rag_query(RagQuery(collection="bench", query=q, k=5), ctx)["matches"][0]["id"] for q, _ in PARAPHRASES
    ]
    out["top1"] = sum(hit.split("-")[0] == want for hit, (_, want) in zip(top, PARAPHRASES, strict=True))
    out["queries"] = len(PARAPHRASES)
    return out


def child_agent(data_dir: Path) -> dict[str, Any]:
    from workers.agent import AgentInput, agent

    ctx = ctx_for(data_dir)
    payloads = [AgentInput(question=q, collection="bench") for q, _ in PARAPHRASES[:2]]
    return _two_calls(lambda: agent(payloads[0], ctx), lambda: agent(payloads[1], ctx))


def _quality(vectors: list[list[float]], questions: list[list[float]]) -> tuple[int, float]:
    import numpy as np

    docs, asks = np.array(vectors), np.array(questions)
    topics = list(TOPICS)
    top1, reciprocal = 0, 0.0
    for row, (_, want) in zip(asks @ docs.T, PARAPHRASES, strict=True):
        ranked = [topics[i // len(NOTES)] for i in np.argsort(-row)]
        unique = list(dict.fromkeys(ranked))
        top1 += unique[0] == want
        reciprocal += 1 / (unique.index(want) + 1)
    return top1, round(reciprocal / len(PARAPHRASES), 3)


def child_level(data_dir: Path, level: str, lowmem: bool) -> dict[str, Any]:
    from workers.embedding import MiniLMEmbedder, cached_lowmem_model

    model_file = cached_lowmem_model(data_dir / "models") if lowmem else None
    embedder = MiniLMEmbedder(model_file=model_file, opt_level=level)  # type: ignore[arg-type]
    texts = [d["text"] for d in documents("a")]
    out: dict[str, Any] = {"level": level, "model": "lowmem" if lowmem else "packaged"}
    embedder.tokenizer  # noqa: B018 - the tokenizer is not what is compared here
    out["base_mb"] = round(status_mb("VmRSS"), 1)
    with measured(out, "load"):
        embedder.session  # noqa: B018
    with measured(out, "first_query"):
        questions = embedder.embed([q for q, _ in PARAPHRASES])
    with measured(out, "embed50_cold"):
        vectors = embedder.embed(texts)
    with measured(out, "embed50_warm"):
        embedder.embed(texts)
    out["top1"], out["mrr"] = _quality(vectors, questions)
    out["vectors"] = [vectors[0][:8], questions[0][:8]]  # compared across levels by the parent
    return out


def child_chroma_default(data_dir: Path) -> dict[str, Any]:
    from chromadb.utils.embedding_functions import DefaultEmbeddingFunction

    function = DefaultEmbeddingFunction()
    texts = [d["text"] for d in documents("a")]
    out: dict[str, Any] = {}
    try:
        with measured(out, "cold"):
            function(texts)
    except Exception as exc:  # the download failing is the expected outcome offline
        return {"available": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    reset_peak()
    with measured(out, "warm"):
        function(texts)
    return {"available": True, **out}


CHILDREN: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": child_prepare,
    "ingest": child_ingest,
    "query": child_query,
    "agent": child_agent,
    "level": child_level,
    "chroma-default": child_chroma_default,
}


# ---------------------------------------------------------------------------------------------------
# Parent.


def run_child(name: str, data_dir: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MALLOC_ARENA_MAX": "2"}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, str(data_dir), *args]
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S, check=False
    )
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def max_difference(a: list[list[float]], b: list[list[float]]) -> float:
    return max(
        abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)
    )


def run_all(data_dir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "load_avg": os.getloadavg()}
    results["prepare"] = run_child("prepare", data_dir)
    for name in ("ingest", "query", "agent"):
        results[name] = run_child(name, data_dir)
    levels = [run_child("level", data_dir, level, flag) for flag in ("0", "1") for level in LEVELS]
    reference = levels[0].get("vectors")
    for row in levels:
        vectors = row.pop("vectors", None)
        if reference and vectors:
            row["max_abs_diff_vs_reference"] = float(f"{max_difference(reference, vectors):.2e}")
    results["levels"] = levels
    with tempfile.TemporaryDirectory() as home:
        # A throwaway HOME: if the default function downloads anything, it lands here and goes away.
        os.environ["HOME"] = home
        results["chroma_default"] = run_child("chroma-default", data_dir)
    results["load_avg_after"] = os.getloadavg()
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"cpus={results['cpus']} load average before={results['load_avg']} after={results['load_avg_after']}"
    )
    print(f"prepare (once per data dir): {results['prepare']}")
    head = ("scenario", "cold wall/cpu s", "cold peak MB", "warm wall/cpu s", "warm peak MB")
    print("{:10} {:>16} {:>13} {:>16} {:>13}".format(*head))
    for name in ("ingest", "query", "agent"):
        row = results[name]
        if "error" in row:
            print(f"{name:10} {row['error']}")
            continue
        cold = f"{row['cold_wall_s']:.2f}/{row['cold_cpu_s']:.2f}"
        warm = f"{row['warm_wall_s']:.2f}/{row['warm_cpu_s']:.2f}"
        print(f"{name:10} {cold:>16} {row['cold_peak_mb']:>13} {warm:>16} {row['warm_peak_mb']:>13}")
    if "top1" in results["query"]:
        print(f"query retrieval: top-1 {results['query']['top1']}/{results['query']['queries']} paraphrases")
    print()
    level_head = (
        "model",
        "level",
        "load s",
        "load MB",
        "1st q s",
        "1st q MB",
        "50 cold cpu s",
        "50 warm cpu s",
    )
    print(
        "{:9} {:9} {:>7} {:>8} {:>8} {:>9} {:>14} {:>14} {:>9} {:>6} {:>9}".format(
            *level_head, "peak MB", "top1", "maxdiff"
        )
    )
    for row in results["levels"]:
        if "error" in row:
            print(row["error"])
            continue
        print(
            f"{row['model']:9} {row['level']:9} {row['load_wall_s']:>7} {row['load_peak_mb']:>8} "
            f"{row['first_query_wall_s']:>8} {row['first_query_peak_mb']:>9} {row['embed50_cold_cpu_s']:>14} "
            f"{row['embed50_warm_cpu_s']:>14} {row['embed50_warm_peak_mb']:>9} {row['top1']:>6} "
            f"{row.get('max_abs_diff_vs_reference', '-'):>9}"
        )
    print()
    print(f"chroma default embedding function: {results['chroma_default']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--data-dir", type=Path, help="data dir to use (default: a fresh temporary one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, data_dir, *rest = args.child
        flags = [r == "1" if r in {"0", "1"} else r for r in rest]
        print(json.dumps(CHILDREN[name](Path(data_dir), *flags)))
        return 0
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        results = run_all(args.data_dir or Path(tmp))
    print_table(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
