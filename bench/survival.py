"""Scenario 4, survival: a minute of adversarial mixed load against memvisor in a 512 MB container,
then the same job sequence run the seed's way (bench/seedload.py); then the hostile minute in Render
and lab mode on several seeds (bench/hostile.py).

Reported for each: the container's OOM kills (memory.oom_control), its peak usage
(memory.max_usage_in_bytes), tasks by outcome, and goodput (succeeded tasks per second of the run).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from typing import Any

import httpx

from bench import hostile, seedload, workload
from bench.plan import Context, Plan
from bench.recorder import MemoryRecorder
from bench.service import container, container_figures, kinds, log, reset_peak, server

MAX_JOBS = 5000  # far more than a minute can take: the clock, not the list, ends the run
WAIT_S = 30
GIVE_UP_S = 300  # a task not final by then is counted as unfinished (lost)
FINAL = {"succeeded", "failed", "killed", "timed_out", "cancelled"}


def run(plan: Plan, ctx: Context, ocr_usable: bool) -> dict[str, Any]:
    image = _ocr_image() if ocr_usable else None
    ours = _memvisor(plan, ctx, image)
    sequence = workload.jobs(set(ours["offered"]), MAX_JOBS)  # the same seeded sequence
    baselines = {mode: seedload.run(mode, sequence, plan, ctx, image) for mode in seedload.MODES}
    summary = summarize(ours, baselines)
    return {"memvisor": ours, "baselines": baselines, "hostile": hostile.run(plan, ctx), "summary": summary}


def _ocr_image() -> bytes:
    from bench.ocr_bench import IMAGES
    from workers.ocr import samples

    buffer = io.BytesIO()
    samples.text_page(**IMAGES["small"]).image.save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def _memvisor(plan: Plan, ctx: Context, image: bytes | None) -> dict[str, Any]:
    env = {"OCR_MODEL_DIR": str(ctx.ocr_model_dir)} if ctx.ocr_model_dir else {}
    with container() as group, server(ctx.work_dir / "survival", group, env) as srv:
        offered = set(kinds(srv)) - (set() if image else {"ocr"})
        sequence = workload.jobs(offered, MAX_JOBS)
        if "rag.ingest" in offered:
            srv.wait(srv.submit("rag.ingest", workload.setup_ingest())["id"], GIVE_UP_S)
        high_water_mb = srv.memory()["high_water_mb"]
        ooms_before = reset_peak(group)
        recorder = MemoryRecorder(group, srv.admin)
        recorder.start()
        log(f"survival: memvisor, {plan.survival_s:g} s of mixed load ({', '.join(sorted(offered))})")
        started = time.time()
        outcomes = asyncio.run(_play(srv.url, sequence, plan, image))
        recorder.stop()
        kills = srv.admin.get("/admin/kills", params={"limit": 500}).json()
        stats = srv.admin.get("/admin/stats").json()
        figures = container_figures(group, ooms_before)
        healthy = srv.client.get("/healthz").status_code == 200
    played = {o["index"] for o in outcomes}
    return {
        "started": started,
        "offered": sorted(offered),
        "high_water_mb": high_water_mb,
        "jobs": [job.as_dict() for job in sequence if job.index in played],
        "outcomes": outcomes,
        "trace": recorder.samples,
        "kills": kills,
        "stats": stats,
        "probe_failures": recorder.failures,
        "probe_slowest_s": round(recorder.slowest_s, 3),
        "healthy_after": healthy,
        **figures,
    }


async def _play(
    url: str, sequence: list[workload.Job], plan: Plan, image: bytes | None
) -> list[dict[str, Any]]:
    """``survival_clients`` clients take the next job of the sequence until the time is up."""
    jobs = iter(sequence)
    deadline = time.monotonic() + plan.survival_s
    outcomes: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=plan.survival_clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=WAIT_S + 30, limits=limits) as client:

        async def player() -> None:
            while time.monotonic() < deadline and (job := next(jobs, None)) is not None:
                outcomes.append(await _one(client, job, image))

        await asyncio.gather(*(player() for _ in range(plan.survival_clients)))
    return outcomes


async def _one(client: httpx.AsyncClient, job: workload.Job, image: bytes | None) -> dict[str, Any]:
    record: dict[str, Any] = {"index": job.index, "kind": job.kind, "submitted": time.time()}
    try:
        created = await _submit(client, job, image)
    except httpx.HTTPError as exc:
        return {**record, "state": "refused", "reason": f"{type(exc).__name__}", "ended": time.time()}
    if created.status_code != 202:
        return {**record, "state": "refused", "reason": f"http {created.status_code}", "ended": time.time()}
    task = await _final(client, created.json()["id"])
    return {
        **record,
        "ended": time.time(),
        "state": task.get("state", "unfinished"),
        "reason": task.get("reason"),
        "error_type": (task.get("error") or {}).get("type"),
        "peak_rss_mb": task.get("peak_rss_mb"),
        "ceiling_mb": task.get("ceiling_mb"),
        "attempts": task.get("attempts"),
    }


async def _submit(client: httpx.AsyncClient, job: workload.Job, image: bytes | None) -> httpx.Response:
    if job.kind == "ocr" and image is not None:
        return await client.post("/v1/ocr", files={"file": (workload.OCR_FILE, image, "image/png")})
    return await client.post("/v1/tasks", json={"kind": job.kind, "payload": job.payload})


async def _final(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    give_up = time.monotonic() + GIVE_UP_S
    task: dict[str, Any] = {}
    while time.monotonic() < give_up:
        try:
            task = (await client.get(f"/v1/tasks/{task_id}", params={"wait_s": WAIT_S})).json()
        except httpx.HTTPError:
            await asyncio.sleep(0.5)
            continue
        if task.get("state") in FINAL:
            return task
    return {**task, "state": "unfinished"}


def outcome_counts(outcomes: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(f"{o['state']}/{o.get('reason') or '-'}" for o in outcomes))


def goodput(outcomes: list[dict[str, Any]], started: float) -> float | None:
    ended: list[float] = [o["ended"] for o in outcomes if o.get("ended")]
    if not ended:
        return None
    succeeded = sum(o["state"] == "succeeded" for o in outcomes)
    return float(succeeded / (max(ended) - started))


def summarize(ours: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = {"memvisor": _row(ours)}
    for mode, result in baselines.items():
        rows[mode] = _row(result)
    return {
        "table": rows,
        "aim_no_container_oom_met": ours.get("container_oom_kills") == 0,
        "aim_max_usage_under_limit_met": (ours.get("container_max_usage_mb") or 0)
        < (ours.get("limit_mb") or 512),
    }


def _category(outcome: dict[str, Any]) -> str:
    """Lost: no answer at all (the process died, the task never ended, or a broken pool took it)."""
    if outcome["state"] in ("lost", "unfinished"):
        return "lost"
    return str(outcome["state"])


def _row(result: dict[str, Any]) -> dict[str, Any]:
    outcomes = result["outcomes"]
    states = Counter(_category(o) for o in outcomes)
    return {
        "tasks": len(outcomes),
        "answered": len(outcomes) - states.get("lost", 0),
        "succeeded": states.get("succeeded", 0),
        "killed": states.get("killed", 0),
        "failed": states.get("failed", 0),
        "lost": states.get("lost", 0),
        "refused": states.get("refused", 0),
        "by_reason": outcome_counts(outcomes),
        "goodput_per_s": goodput(outcomes, result["started"]),
        "container_oom_kills": result.get("container_oom_kills"),
        "container_max_usage_mb": result.get("container_max_usage_mb"),
        "process_deaths": len(result.get("deaths", [])),
        "pool_broken_at_s": result.get("pool_broken_at_s"),
    }
