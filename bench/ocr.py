"""Scenario 5, OCR on real pages (bench/ocr_corpus.py): memvisor's ``ocr`` kind against plain EasyOCR.

Per page, in the same run and one right after the other: memvisor through the real service
(``POST /v1/ocr?wait_s=...`` to the final task, in a 512 MB cgroup; a new worker per task, as always)
and a fresh plain ``easyocr.Reader(['en'])`` process (imports and model load included, as a user's
script pays them; ocr_corpus's plain child). Both texts are scored with ocr_corpus.word_match.
The whole corpus runs on the machine's cores, then ``plan.ocr_quota_pages`` under a 0.5-CPU quota
(a cgroup v1 cpu group, cfs_quota_us=50000 per 100000), service and plain process alike.

memvisor's peak is the task's peak_rss_mb; plain's, the VmHWM of its process, whose time runs from its
start to its exit after the first readtext. Ratio: memvisor / plain latency of the same page. Word
match: F1 of the multisets of words. Aim: ratio <= 0.4, match no more than 0.01 below plain's, peak
<= 320 MB.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import ocr_corpus
from bench.plan import Context, Plan
from bench.service import container, kinds, log, run_child, server
from bench.stats import aim, fmt, spread
from harness.server import Server

TASK_TIMEOUT_S = 900
PLAIN_TIMEOUT_S = 1800
PERIOD_US = 100_000  # harness/cgroup.py's CFS period
QUOTA_US = 50_000  # half a CPU
PLAIN_LIMIT_MB = 16_384  # no memory limit to speak of: the plain Reader is measured, not contained
NO_MODELS = (
    "no exported OCR models (pass --ocr-model-dir or set OCR_MODEL_DIR to the output of "
    "`python -m workers.ocr.export`)"
)
AIM_RATIO = 0.4
AIM_MATCH_BELOW_PLAIN = 0.01
AIM_PEAK_MB = 320


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    pages = tuple(ocr_corpus.BY_KEY[key] for key in plan.ocr_pages or ocr_corpus.BY_KEY)
    if ctx.ocr_model_dir is None or not (ctx.ocr_model_dir / "manifest.json").is_file():
        return {"skipped": NO_MODELS}
    if reason := ocr_corpus.missing(pages):
        return {"skipped": reason}
    rendered = {page.key: ocr_corpus.render(page, ctx.work_dir) for page in pages}
    full = _compare(ctx, rendered, None)
    if "skipped" in full:
        return full
    quota_pages = {key: rendered[key] for key in plan.ocr_quota_pages if key in rendered}
    limited = _compare(ctx, quota_pages, QUOTA_US) if quota_pages else {"skipped": "no page in this plan"}
    overall = summarize(full)
    summary = {
        "pages": _rows(full, overall),
        "quota": _rows(limited, summarize(limited)),
        "aims": _aims(overall),
    }
    return {"pages": full, "quota": limited, "summary": {**summary, "overall": overall}}


def _rows(pages: dict[str, Any], overall: dict[str, Any]) -> Any:
    """The report's rows: one per page, then the medians over the pages."""
    return overall if "skipped" in overall else [*({"page": k, **r} for k, r in pages.items()), overall]


def _compare(ctx: Context, rendered: dict[str, tuple[Path, str]], quota_us: int | None) -> dict[str, Any]:
    """Each page through memvisor then through a fresh plain process, both under ``quota_us`` of CPU
    per 100 ms if given."""
    label = f"{quota_us / PERIOD_US:g} CPU" if quota_us else f"{len(os.sched_getaffinity(0))} cores"
    env = {"OCR_MODEL_DIR": str(ctx.ocr_model_dir)}
    rows: dict[str, Any] = {}
    with container(cpu_quota_us=quota_us) as box, server(ctx.work_dir / "ocr", box, env) as srv:
        if quota_us and box.group is None:
            return {"skipped": f"no cpu cgroup: {box.why_not}"}
        if "ocr" not in kinds(srv):
            return {"skipped": "the service does not offer the ocr kind (GET /v1/kinds)"}
        for key, (image, truth) in rendered.items():
            load = os.getloadavg()[0]
            log(f"ocr ({label}): {key}, memvisor, then a plain easyocr.Reader")
            ours = _ours(srv, image, truth)
            if ours["state"] != "succeeded":
                return {"skipped": f"the ocr task failed on {key}: {ours}"}
            plain = _plain(ctx, image, truth, quota_us)
            rows[key] = {"memvisor": ours, "plain": plain, "load_1min": round(load, 1)}
    return rows


def _ours(srv: Server, image: Path, truth: str) -> dict[str, Any]:
    started = time.perf_counter()
    files = {"file": (image.name, image.read_bytes(), "image/png")}
    response = srv.client.post("/v1/ocr", params={"wait_s": 60}, files=files, timeout=90)
    if response.status_code not in (200, 202):
        return {"state": "refused", "error": f"{response.status_code} {response.text[:300]}"}
    task = response.json()
    if task["state"] in ("queued", "running"):
        task = srv.wait(task["id"], TASK_TIMEOUT_S)
    text = str((task.get("result") or {}).get("text", ""))
    return {
        "state": task["state"],
        "error": task.get("error"),
        "latency_s": round(time.perf_counter() - started, 2),
        "run_s": task.get("run_s"),
        "peak_rss_mb": task["peak_rss_mb"],
        "word_match": round(ocr_corpus.word_match(text, truth), 4),
    }


def _plain(ctx: Context, image: Path, truth: str, quota_us: int | None) -> dict[str, Any]:
    """A fresh plain Reader process, from its start to its exit; its container only sets the CPU
    quota (the Reader peaks far above 512 MB)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.ocr_corpus",
        "--plain-child",
        str(image),
        "--site",
        ":".join(ctx.extra_site),
    ]
    started = time.perf_counter()
    try:
        with container(limit_mb=PLAIN_LIMIT_MB, cpu_quota_us=quota_us) as box:
            report = run_child(cmd, box if quota_us else None, PLAIN_TIMEOUT_S, ctx.repo)
    except RuntimeError as exc:
        return {"skipped": f"easyocr could not run: {str(exc)[-400:]}"}
    return {
        "latency_s": round(time.perf_counter() - started, 2),
        "cold_s": report["cold_s"],
        "peak_rss_mb": report["peak_mb"],
        "word_match": round(ocr_corpus.word_match(report["text"], truth), 4),
    }


def summarize(rows: dict[str, Any]) -> dict[str, Any]:
    """Per page the latency ratio memvisor / plain; over the pages, spreads of every figure."""
    if "skipped" in rows or not rows:
        return {"skipped": rows.get("skipped", "no page")}
    done = {k: r for k, r in rows.items() if "skipped" not in r["plain"]}
    for row in done.values():
        row["ratio"] = round(row["memvisor"]["latency_s"] / row["plain"]["latency_s"], 3)
    mean = {
        engine: round(sum(r[engine]["word_match"] for r in done.values()) / max(1, len(done)), 4)
        for engine in ("memvisor", "plain")
    }
    return {
        "page": f"**median [min-max] of {len(done)} pages**",
        "memvisor": {"latency_s": spread(r["memvisor"]["latency_s"] for r in rows.values()),
                     "peak_rss_mb": spread(r["memvisor"]["peak_rss_mb"] for r in rows.values()),
                     "word_match": f"mean {mean['memvisor']:.3f}"},
        "plain": {"latency_s": spread(r["plain"]["latency_s"] for r in done.values()),
                  "peak_rss_mb": spread(r["plain"]["peak_rss_mb"] for r in done.values()),
                  "word_match": f"{mean['plain']:.3f}"},
        "ratio": spread(r["ratio"] for r in done.values()),
        "mean_word_match": mean,
        "load_1min": spread(r["load_1min"] for r in rows.values()),
    }  # fmt: skip


def _aims(s: dict[str, Any]) -> list[dict[str, Any]]:
    if "skipped" in s:
        return [aim("5 OCR", "not measured", f"<= {AIM_RATIO} x plain EasyOCR's time", None)]
    ratio, match, peak_mb = s["ratio"]["median"], s["mean_word_match"], s["memvisor"]["peak_rss_mb"]["max"]
    fast = ratio is not None and ratio <= AIM_RATIO
    accurate = match["memvisor"] >= match["plain"] - AIM_MATCH_BELOW_PLAIN
    small = peak_mb is not None and peak_mb <= AIM_PEAK_MB
    matches = f"{match['memvisor']:.3f} vs {match['plain']:.3f}"
    return [
        aim("5 OCR time / plain EasyOCR", fmt(s["ratio"], 2), f"<= {AIM_RATIO}", fast),
        aim("5 OCR word match", matches, f">= plain - {AIM_MATCH_BELOW_PLAIN}", accurate),
        aim("5 OCR worker peak", f"{fmt(peak_mb, 0)} MB (max)", f"<= {AIM_PEAK_MB} MB", small),
    ]
