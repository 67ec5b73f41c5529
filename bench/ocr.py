"""Scenario 5, OCR on real pages (bench/ocr_corpus.py): memvisor's ``ocr`` kind against plain EasyOCR.

Per page, in the same run and one right after the other: memvisor through the real service
(``POST /v1/ocr?wait_s=...`` to the final task, in a 512 MB cgroup; a new worker per task, as always)
and a fresh plain ``easyocr.Reader(['en'])`` process (imports and model load included, as a user's
script pays them; bench/ocr_bench.py's child). Both texts are scored with ocr_corpus.word_match.
The whole corpus runs on the machine's cores, then ``plan.ocr_quota_pages`` under a 0.5-CPU quota
(a cgroup v1 cpu group, cfs_quota_us=50000 per 100000), service and plain process alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import ocr_corpus
from bench.plan import Context, Plan
from bench.service import container, kinds, log, run_child, server, wrap_of
from bench.stats import spread
from harness.server import Server

TASK_TIMEOUT_S = 900
PLAIN_TIMEOUT_S = 1800
QUOTA_CPUS = 0.5
_CPU_ROOT = Path("/sys/fs/cgroup/cpu")
_PERIOD_US = 100_000


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    keys = plan.ocr_pages or tuple(ocr_corpus.BY_KEY)
    pages = tuple(ocr_corpus.BY_KEY[key] for key in keys)
    reason = _unavailable(ctx) or ocr_corpus.missing(pages)
    if reason:
        return {"skipped": reason}
    rendered = {page.key: ocr_corpus.render(page, ctx.work_dir) for page in pages}
    full = _compare(ctx, rendered, None)
    if "skipped" in full:
        return full
    quota_pages = {key: rendered[key] for key in plan.ocr_quota_pages if key in rendered}
    with _cpu_group(QUOTA_CPUS) as cpu:
        limited = _compare(ctx, quota_pages, cpu) if quota_pages and cpu else {"skipped": "no cpu cgroup"}
    return {
        "pages": full,
        "quota": limited,
        "summary": {"pages": summarize(full), "quota": summarize(limited)},
    }


def _unavailable(ctx: Context) -> str | None:
    if ctx.ocr_model_dir is None or not (ctx.ocr_model_dir / "manifest.json").is_file():
        return (
            "no exported OCR models (pass --ocr-model-dir or set OCR_MODEL_DIR to the output of "
            "`python -m workers.ocr.export`)"
        )
    return None


def _compare(ctx: Context, rendered: dict[str, tuple[Path, str]], cpu: Path | None) -> dict[str, Any]:
    """Each page through memvisor then through a fresh plain process; ``cpu``: a cpu group for both."""
    label = f"{QUOTA_CPUS:g} CPU" if cpu else f"{len(os.sched_getaffinity(0))} cores"
    env = {"OCR_MODEL_DIR": str(ctx.ocr_model_dir)}
    rows: dict[str, Any] = {}
    with container() as group, server(ctx.work_dir / "ocr", group, env, _wrap(group, cpu)) as srv:
        if "ocr" not in kinds(srv):
            return {"skipped": "the service does not offer the ocr kind (GET /v1/kinds)"}
        for key, (image, truth) in rendered.items():
            load = os.getloadavg()[0]
            log(f"ocr ({label}): {key}, memvisor")
            ours = _ours(srv, image, truth)
            if ours["state"] != "succeeded":
                return {"skipped": f"the ocr task failed on {key}: {ours}"}
            log(f"ocr ({label}): {key}, plain easyocr.Reader")
            plain = _plain(ctx, image, truth, cpu)
            rows[key] = {"memvisor": ours, "plain": plain, "load_1min": round(load, 1)}
    return rows


def _wrap(group: Any, cpu: Path | None) -> list[str] | None:
    memory = wrap_of(group)
    if cpu is None:
        return memory
    return [*_cpu_wrap(cpu), *(memory or [])]


def _cpu_wrap(cpu: Path) -> list[str]:
    return ["sh", "-c", f'echo $$ > {cpu}/cgroup.procs && exec "$0" "$@"']


@contextmanager
def _cpu_group(cpus: float) -> Iterator[Path | None]:
    """A cgroup v1 cpu group with a CFS quota of ``cpus`` (None where none can be made)."""
    path = _CPU_ROOT / f"memvisor-bench-{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir()
        (path / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(int(cpus * _PERIOD_US)))
    except OSError as exc:
        log(f"ocr: no cpu cgroup ({exc}): the quota part is skipped")
        yield None
        return
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.rmdir()


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


def _plain(ctx: Context, image: Path, truth: str, cpu: Path | None) -> dict[str, Any]:
    """A fresh plain Reader process, from its start to its first result (bench/ocr_bench.py's child)."""
    script = str(ctx.repo / "bench" / "ocr_bench.py")
    cmd = [sys.executable, "-m", "bench.withsite", ":".join(ctx.extra_site), script]
    cmd += ["--out", "-", "--cold-only", "--child", "plain", str(image)]
    started = time.perf_counter()
    try:
        out = run_child(
            [*(_cpu_wrap(cpu) if cpu else []), *cmd],
            "no container: the plain Reader peaks far above 512 MB",
            PLAIN_TIMEOUT_S,
            ctx.repo,
        )
    except RuntimeError as exc:
        return {"skipped": f"easyocr could not run: {str(exc)[-400:]}"}
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {
        "latency_s": round(time.perf_counter() - started, 2),  # process start to exit
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
        "pages": len(rows),
        "compared": len(done),
        "ratio": spread(r["ratio"] for r in done.values()),
        "memvisor_latency_s": spread(r["memvisor"]["latency_s"] for r in rows.values()),
        "plain_latency_s": spread(r["plain"]["latency_s"] for r in done.values()),
        "memvisor_peak_mb": spread(r["memvisor"]["peak_rss_mb"] for r in rows.values()),
        "plain_peak_mb": spread(r["plain"]["peak_rss_mb"] for r in done.values()),
        "mean_word_match": mean,
        "load_1min": spread(r["load_1min"] for r in rows.values()),
    }
