"""``python -m bench [--quick] [--out bench/results]``: run the scenarios, write latest.json, report.md
and the PNG plots.

Scenarios run in this order (OCR before survival, which adds OCR jobs to its mix only if OCR worked):
footprint, dispatch, enforcement, ocr, survival, rag, instances, browser. One that fails is recorded
with its error and the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    browser_bench,
    dispatch,
    enforcement,
    footprint,
    instances,
    ocr,
    plot,
    rag,
    report,
    survival,
)
from bench.plan import FULL, QUICK, Context, Plan
from bench.service import log
from harness.cgroup import LimitedCgroup, make_cgroup

ORDER = ("footprint", "dispatch", "enforcement", "ocr", "survival", "rag", "instances", "browser")
REPO = Path(__file__).resolve().parent.parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about 6 minutes)")
    parser.add_argument("--only", default=",".join(ORDER), help=f"comma-separated, of: {', '.join(ORDER)}")
    parser.add_argument(
        "--extra-site",
        default=os.environ.get("BENCH_EXTRA_SITE", ""),
        help="colon-separated site-packages appended to the baselines' sys.path (torch, easyocr); "
        "default $BENCH_EXTRA_SITE",
    )
    parser.add_argument(
        "--ocr-model-dir",
        type=Path,
        default=Path(os.environ["OCR_MODEL_DIR"])
        if os.environ.get("OCR_MODEL_DIR")
        else REPO / "data/models/ocr",
        help="exported OCR models (default $OCR_MODEL_DIR, else ./data/models/ocr)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = QUICK if args.quick else FULL
    out_dir = args.out.resolve()
    work_dir = out_dir / "tmp" / time.strftime("%Y%m%d-%H%M%S")
    work_dir.mkdir(parents=True, exist_ok=True)
    extra_site = tuple(d for d in args.extra_site.split(":") if d)
    ctx = Context(work_dir, extra_site, args.ocr_model_dir.resolve())
    started = time.monotonic()
    results: dict[str, Any] = {"meta": _meta(plan, ctx)}
    for name in [n for n in ORDER if n in args.only.split(",")]:
        results[name] = _guarded(name, plan, ctx, results)
        _write_json(results, out_dir)
    results["meta"].update(took_s=round(time.monotonic() - started, 1), load_after=_load())
    _finish(results, out_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        work_dir.parent.rmdir()  # only if no other run's scratch is there
    log(f"done in {results['meta']['took_s'] / 60:.1f} min: {out_dir / 'report.md'}")
    return 0


RUNNERS: dict[str, Callable[[Plan, Context], dict[str, Any]]] = {
    "footprint": footprint.run,
    "dispatch": dispatch.run,
    "enforcement": enforcement.run,
    "ocr": ocr.run,
    "rag": rag.run,
    "instances": instances.run,
    "browser": browser_bench.run,
}


def _guarded(name: str, plan: Plan, ctx: Context, results: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario; a failure is recorded with its traceback, and the suite goes on."""
    log(f"scenario {name}")
    started = time.monotonic()
    try:
        if name == "survival":
            result = survival.run(plan, ctx, ocr_usable="summary" in (results.get("ocr") or {}))
        else:
            result = RUNNERS[name](plan, ctx)
    except Exception:
        log(f"scenario {name} failed:\n{traceback.format_exc()}")
        result = {"error": traceback.format_exc()}
    result["took_s"] = round(time.monotonic() - started, 1)
    return result


def _finish(results: dict[str, Any], out_dir: Path) -> None:
    plots = plot.write_all(results, out_dir)
    (out_dir / "report.md").write_text(report.build(results, plots))
    _write_json(results, out_dir)


def _write_json(results: dict[str, Any], out_dir: Path) -> None:
    path = out_dir / "latest.json"
    path.with_suffix(".tmp").write_text(json.dumps(results, indent=1, default=str))
    path.with_suffix(".tmp").replace(path)


def _meta(plan: Plan, ctx: Context) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "plan_figures": {k: v for k, v in vars(plan).items() if k != "name"},
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_before": _load(),
        "git": _git(),
        "container": _container_check(),
        "extra_site": ":".join(ctx.extra_site),
        "ocr_model_dir": str(ctx.ocr_model_dir),
    }


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _git() -> str:
    """The commit, and whether the tree differs from it (read-only: no index refresh, no lock)."""

    def git(*cmd: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *cmd], cwd=REPO, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}" + (" with uncommitted changes" if dirty else "")


def _container_check() -> str:
    group = make_cgroup(512)
    if isinstance(group, LimitedCgroup):
        parent = group.path.parent
        group.remove()
        return f"yes: a fresh cgroup v1 memory group limited to 512 MB per scenario, under {parent}"
    return f"no ({group}): scenarios ran without one, and container figures are missing"
