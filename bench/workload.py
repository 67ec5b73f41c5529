"""The adversarial mixed workload of the survival scenario: one seeded sequence of jobs, played the
same way against memvisor and against the seed-style baselines.

A job is a task kind and its payload. Allocation bombs at random sizes and rates (many past the
kind's 256 MB ceiling, some past the whole container), grandchildren that allocate, segfaults, and
real rag.ingest / rag.query / agent (and ocr) tasks where the service offers them.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass
from typing import Any

from bench.rag import PARAPHRASES, TOPICS

SEED = 20261127
COLLECTION = "bench"
# kind -> weight in the mix; kinds the service does not offer are left out (and so from the baselines).
WEIGHTS = {
    "diag.alloc": 30,
    "diag.spawn": 10,
    "diag.crash": 10,
    "rag.ingest": 10,
    "rag.query": 15,
    "agent": 10,
    "ocr": 10,
}
ALLOC_MB = (64, 128, 192, 320, 640)
ALLOC_RATES_MB_S = (0, 100, 300, 1000)
SPAWN_MB_EACH = (40, 80, 120)
OCR_FILE = "page.png"
OCR_PAGE = {"font_px": 40, "size": (800, 200), "margin_px": 20}  # one line of known text


@dataclass(frozen=True)
class Job:
    index: int
    kind: str
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def jobs(kinds: set[str], count: int, seed: int = SEED) -> list[Job]:
    """``count`` jobs drawn from the weighted mix of the kinds available."""
    rng = random.Random(seed)
    names = [name for name in WEIGHTS if name in kinds]
    weights = [WEIGHTS[name] for name in names]
    return [
        Job(i, kind, _payload(kind, rng, i)) for i, kind in enumerate(rng.choices(names, weights, k=count))
    ]


def _payload(kind: str, rng: random.Random, index: int) -> dict[str, Any]:
    if kind == "diag.alloc":
        return {"mb": rng.choice(ALLOC_MB), "rate_mb_s": rng.choice(ALLOC_RATES_MB_S), "hold_s": 0.5}
    if kind == "diag.spawn":
        return {"children": rng.randint(2, 3), "mb_each": rng.choice(SPAWN_MB_EACH), "hold_s": 0.5}
    if kind == "rag.ingest":
        return {"collection": COLLECTION, "documents": documents(rng, f"job{index}", 5)}
    if kind == "rag.query":
        return {"collection": COLLECTION, "query": rng.choice(PARAPHRASES)[0], "k": 3}
    if kind == "agent":
        return {"question": rng.choice(PARAPHRASES)[0], "collection": COLLECTION}
    if kind == "ocr":
        return {"file": OCR_FILE}
    return {}


def documents(rng: random.Random, tag: str, count: int) -> list[dict[str, Any]]:
    topics = rng.sample(sorted(TOPICS), count)
    return [{"id": f"{tag}-{topic}", "text": TOPICS[topic], "metadata": {"set": tag}} for topic in topics]


def setup_ingest() -> dict[str, Any]:
    """The collection the queries read, ingested before the clock starts."""
    return {"collection": COLLECTION, "documents": documents(random.Random(SEED), "base", len(TOPICS))}


def ocr_image() -> bytes:
    """The PNG the OCR jobs read."""
    from workers.ocr import samples

    buffer = io.BytesIO()
    samples.text_page(**OCR_PAGE).image.save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()
