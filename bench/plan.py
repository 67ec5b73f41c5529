"""How much each scenario runs: the full suite (under 15 minutes on 2 cores, plus ~15 for the OCR corpus)
and a quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Plan:
    name: str
    repeats: int  # of every repeated measurement (footprint, dispatch)
    footprint_load_tasks: int  # no-op tasks run before the "after load" idle reading
    dispatch_tasks: dict[int, int]  # concurrency -> most tasks timed per run
    dispatch_run_s: float  # ... and no task started after this long (the slow peers)
    dispatch_warmup_tasks: int
    enforcement_repeats: int
    enforcement_rates_mb_s: tuple[float, ...] = (100, 1000, 0)
    enforcement_alloc_mb: int = 600
    enforcement_ceiling_mb: int = 200
    survival_s: float = 60
    survival_clients: int = 6
    hostile_seeds: tuple[int, ...] = (11, 12, 13)  # of the hostile minute, in Render and lab mode
    instances_tasks: int = 400  # no-op tasks per setup of the instances scenario
    ocr_pages: tuple[str, ...] = ()  # keys of bench/ocr_corpus.py's pages; empty: all of them
    ocr_quota_pages: tuple[str, ...] = ("r-intro-prose", "gnuplot-table")  # also run under 0.5 CPU


FULL = Plan(
    name="full",
    repeats=3,
    footprint_load_tasks=100,
    dispatch_tasks={1: 100, 8: 200, 32: 320},
    dispatch_run_s=4.0,
    dispatch_warmup_tasks=4,
    enforcement_repeats=3,
    survival_s=60,
)
QUICK = Plan(
    name="quick",
    repeats=1,
    footprint_load_tasks=10,
    dispatch_tasks={1: 10, 8: 16},
    dispatch_run_s=1.0,
    dispatch_warmup_tasks=2,
    enforcement_repeats=1,
    survival_s=10,
    hostile_seeds=(11,),
    instances_tasks=60,
    ocr_pages=("r-intro-prose",),
    ocr_quota_pages=(),
)


@dataclass(frozen=True)
class Context:
    """Where a run works, and what it may use besides the project venv."""

    work_dir: Path  # scratch: data dirs of the servers, logs, images (removed at the end)
    extra_site: tuple[str, ...] = field(default=())  # appended to sys.path of baseline children only
    ocr_model_dir: Path | None = None  # exported ONNX models of the ocr kind (OCR_MODEL_DIR)
    repo: Path = Path(__file__).resolve().parent.parent
