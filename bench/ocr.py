"""Scenario 5, OCR: the ``ocr`` kind's peak RSS and latency, cold and warm, against a plain
``easyocr.Reader(['en'])`` + readtext in a fresh process (bench/ocr_bench.py's child does that part).

memvisor runs every task in a new worker, so its "warm" task is a second task of the same kind (a new
process, with the models in the page cache); the plain Reader's warm read reuses the loaded model in
the same process. Both are reported as they are, side by side.
"""

from __future__ import annotations

import io
import json
import sys
import time
from typing import Any

from bench.plan import Context, Plan
from bench.service import container, kinds, log, run_child, server
from bench.stats import ratio, spread
from tests.harness import Server

TASK_TIMEOUT_S = 300
PLAIN_TIMEOUT_S = 900


def run(plan: Plan, ctx: Context) -> dict[str, Any]:
    reason = _unavailable(ctx)
    if reason:
        return {"skipped": reason}
    pages = {name: _page(name) for name in plan.ocr_images}
    with container() as group, server(ctx.work_dir / "ocr", group, _env(ctx)) as srv:
        if "ocr" not in kinds(srv):
            return {"skipped": "the service does not offer the ocr kind (GET /v1/kinds)"}
        ours = {name: _ours(srv, page, plan.ocr_runs) for name, page in pages.items()}
    failed = _first_failure(ours)
    if failed:
        return {"skipped": f"the ocr kind is listed but its task failed here: {failed}", "memvisor": ours}
    plain = {name: _plain(ctx, page, plan.ocr_plain_runs) for name, page in pages.items()}
    return {"memvisor": ours, "plain": plain, "summary": summarize(ours, plain)}


def _unavailable(ctx: Context) -> str | None:
    if ctx.ocr_model_dir is None or not (ctx.ocr_model_dir / "manifest.json").is_file():
        return (
            "no exported OCR models (pass --ocr-model-dir or set OCR_MODEL_DIR to the output of "
            "`python -m workers.ocr.export`)"
        )
    try:
        import PIL  # noqa: F401  (the test images are drawn with Pillow)
    except ImportError:
        return "Pillow is not installed: no test image can be drawn"
    return None


def _env(ctx: Context) -> dict[str, str]:
    return {"OCR_MODEL_DIR": str(ctx.ocr_model_dir)} if ctx.ocr_model_dir else {}


def _page(name: str) -> Any:
    from bench.ocr_bench import IMAGES
    from workers.ocr import samples

    return samples.text_page(**IMAGES[name])  # type: ignore[arg-type]


def _ours(srv: Server, page: Any, runs: int) -> list[dict[str, Any]]:
    from workers.ocr import samples

    buffer = io.BytesIO()
    page.image.save(buffer, format="PNG")
    results: list[dict[str, Any]] = []
    for index in range(runs):
        log(f"ocr: memvisor task {index + 1}/{runs}")
        started = time.perf_counter()
        files = {"file": ("page.png", buffer.getvalue(), "image/png")}
        created = srv.client.post("/v1/ocr", files=files)
        if created.status_code != 202:
            results.append({"state": "refused", "error": f"{created.status_code} {created.text[:300]}"})
            break
        task = srv.wait(created.json()["id"], TASK_TIMEOUT_S)
        result = task.get("result") or {}
        results.append(
            {
                "run": "cold" if index == 0 else "warm",
                "state": task["state"],
                "reason": task["reason"],
                "error": task.get("error"),
                "latency_s": round(time.perf_counter() - started, 3),
                "run_s": task.get("run_s"),
                "peak_rss_mb": task["peak_rss_mb"],
                "cer": samples.cer(str(result.get("text", "")), page.text) if result else None,
            }
        )
    return results


def _first_failure(ours: dict[str, list[dict[str, Any]]]) -> str | None:
    for runs in ours.values():
        for run in runs:
            if run["state"] != "succeeded":
                error = run.get("error") or {}
                what = f"{error.get('type', '')} {error.get('message', '')}"
                return f"{run['state']} ({run.get('reason')}): {what}"[:400]
    return None


def _plain(ctx: Context, page: Any, runs: int) -> dict[str, Any]:
    """The plain Reader in fresh processes, through bench/ocr_bench.py's child (needs easyocr)."""
    from workers.ocr import samples

    path = ctx.work_dir / "ocr-page.png"
    page.image.save(path)
    script = str(ctx.repo / "bench" / "ocr_bench.py")
    cmd = [sys.executable, "-m", "bench.withsite", ":".join(ctx.extra_site), script]
    cmd += ["--out", "-", "--child", "plain", str(path)]
    results = []
    for index in range(runs):
        log(f"ocr: plain easyocr.Reader {index + 1}/{runs}")
        try:
            out = run_child(
                cmd, "no container: the plain Reader peaks far above 512 MB", PLAIN_TIMEOUT_S, ctx.repo
            )
        except RuntimeError as exc:
            return {"skipped": f"easyocr could not run: {str(exc)[-400:]}"}
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        report["cer"] = samples.cer(report.pop("text"), page.text)
        results.append(report)
    return {"runs": results}


def summarize(ours: dict[str, list[dict[str, Any]]], plain: dict[str, dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name, runs in ours.items():
        cold, warm = runs[:1], runs[1:]
        plain_runs = plain[name].get("runs", [])
        row = {
            "memvisor_cold_latency_s": spread(r["latency_s"] for r in cold),
            "memvisor_warm_latency_s": spread(r["latency_s"] for r in warm),
            "memvisor_cold_peak_mb": spread(r["peak_rss_mb"] for r in cold),
            "memvisor_warm_peak_mb": spread(r["peak_rss_mb"] for r in warm),
            "memvisor_cer": spread(r["cer"] for r in runs),
            "plain_cold_s": spread(r["cold_s"] for r in plain_runs),
            "plain_warm_s": spread(r["warm_s"] for r in plain_runs),
            "plain_peak_mb": spread(r["peak_mb"] for r in plain_runs),
            "plain_cer": spread(r["cer"] for r in plain_runs),
            "plain_skipped": plain[name].get("skipped"),
        }
        row["peak_ratio_plain_to_memvisor"] = ratio(
            _median(row["plain_peak_mb"]),
            _median(row["memvisor_warm_peak_mb"]) or _median(row["memvisor_cold_peak_mb"]),
        )
        table[name] = row
    return {"table": table}


def _median(spread_of: Any) -> float | None:
    median: float | None = spread_of["median"]
    return median
