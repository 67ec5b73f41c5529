"""Scenario 4, survival: a minute of adversarial mixed load against memvisor in a 512 MB container,
then the same job sequence run the seed's way (bench/seedload.py); then the hostile minute
(harness/hostile_mix.py: about fifty tasks submitted at once) in Render and lab mode on several seeds.

One seeded job sequence (bench/workload.py) is played by ``survival_clients`` clients for the stated
time against memvisor, then against the seed-style baselines, each in its own fresh 512 MB container.
The baselines import only the task modules (not the seed's 448 MB of libraries) and are restarted at
once when they die, which flatters them.

Reported for each: the container's OOM kills (memory.oom_control), its peak usage
(memory.max_usage_in_bytes), tasks by outcome, and goodput (succeeded tasks per second of the run).
The hostile minute is judged as tests/test_render_cgroup.py judges one seed: 0 container OOM kills,
peak usage under 512 MB, the same API process answering throughout, every task final with a reason,
every task that fits the container ending as expected.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench import seedload, workload
from bench.plan import Context, Plan
from bench.probes import MemoryRecorder
from bench.service import container, kinds, log, run_task, server
from bench.stats import aim, fmt, ratio, threaded
from harness.hostile_mix import Job as HostileJob
from harness.hostile_mix import mix, outcome
from harness.server import Server

MAX_JOBS = 5000  # far more than a minute can take: the clock, not the list, ends the run
GIVE_UP_S = 300  # a task not final by then is counted as unfinished (lost)
POLL_S = 20
FINAL = {"succeeded", "failed", "killed", "timed_out", "cancelled"}
HOSTILE_GIVE_UP_S = 600
HOSTILE_MODES = ("render", "lab")


def run(plan: Plan, ctx: Context, ocr_usable: bool) -> dict[str, Any]:
    image = workload.ocr_image() if ocr_usable else None
    ours = _memvisor(plan, ctx, image)
    sequence = workload.jobs(set(ours["offered"]), MAX_JOBS)  # the same seeded sequence
    baselines = {mode: seedload.run(mode, sequence, plan, ctx, image) for mode in seedload.MODES}
    hostile = [_hostile(mode, seed, ctx) for mode in HOSTILE_MODES for seed in plan.hostile_seeds]
    return {
        "memvisor": ours,
        "baselines": baselines,
        "hostile": hostile,
        "summary": summarize(ours, baselines, hostile),
    }


def _memvisor(plan: Plan, ctx: Context, image: bytes | None) -> dict[str, Any]:
    env = {"OCR_MODEL_DIR": str(ctx.ocr_model_dir)} if ctx.ocr_model_dir else {}
    with container() as box, server(ctx.work_dir / "survival", box, env) as srv:
        offered = kinds(srv) - (set() if image else {"ocr"})
        sequence = workload.jobs(offered, MAX_JOBS)
        if "rag.ingest" in offered:
            run_task(srv, "rag.ingest", workload.setup_ingest(), GIVE_UP_S)
        high_water_mb = srv.memory()["high_water_mb"]
        box.reset_peak()
        recorder = MemoryRecorder(box.group, srv.admin)
        recorder.start()
        log(f"survival: memvisor, {plan.survival_s:g} s of mixed load ({', '.join(sorted(offered))})")
        started = time.time()
        outcomes = _play(srv, sequence, plan, image)
        probe = recorder.stop()
        kills = srv.admin.get("/admin/kills", params={"limit": 500}).json()
        healthy = srv.client.get("/healthz").status_code == 200
        figures = box.figures()
    played = {o["index"] for o in outcomes}
    return {
        "started": started,
        "offered": sorted(offered),
        "high_water_mb": high_water_mb,
        "jobs": [job.as_dict() for job in sequence if job.index in played],
        "outcomes": outcomes,
        "trace": recorder.samples,
        "kills": kills,
        "healthy_after": healthy,
        **probe,
        **figures,
    }


def _play(srv: Server, sequence: list[workload.Job], plan: Plan, image: bytes | None) -> list[dict[str, Any]]:
    """``survival_clients`` clients take the next job of the sequence until the time is up."""
    jobs = iter(sequence)
    outcomes: list[dict[str, Any]] = []

    def one() -> None:
        job = next(jobs)
        # Unfinished (lost) unless an answer comes: an exception here leaves it so.
        record = {"index": job.index, "kind": job.kind, "submitted": time.time(), "state": "unfinished"}
        outcomes.append(record)
        try:
            if job.kind == "ocr" and image is not None:
                created = srv.client.post("/v1/ocr", files={"file": (workload.OCR_FILE, image, "image/png")})
            else:
                created = srv.client.post("/v1/tasks", json={"kind": job.kind, "payload": job.payload})
        except httpx.HTTPError as exc:
            record.update(state="refused", reason=type(exc).__name__, ended=time.time())
            return
        if created.status_code != 202:
            record.update(state="refused", reason=f"http {created.status_code}", ended=time.time())
            return
        task = _final(srv, created.json()["id"])
        keep = ("state", "reason", "peak_rss_mb", "ceiling_mb", "attempts")
        record.update({k: task.get(k) for k in keep}, ended=time.time())

    threaded(one, len(sequence), plan.survival_clients, plan.survival_s)
    return outcomes


def _final(srv: Server, task_id: str) -> dict[str, Any]:
    """The task once final, long-polled in steps shorter than the client's 30 s timeout (a task may
    queue longer than that under admission); ``unfinished`` if it is not final within GIVE_UP_S."""
    give_up = time.monotonic() + GIVE_UP_S
    while time.monotonic() < give_up:
        try:
            task: dict[str, Any] = srv.client.get(f"/v1/tasks/{task_id}", params={"wait_s": POLL_S}).json()
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if task.get("state") in FINAL:
            return task
    return {"state": "unfinished"}


def _hostile(mode: str, seed: int, ctx: Context) -> dict[str, Any]:
    """The hostile minute on one seed, in a fresh 512 MB container in ``mode``."""
    work_dir = ctx.work_dir / f"hostile-{mode}-{seed}"
    with container(mode, work_dir) as box:
        if box.mode is None:
            return {"mode": mode, "seed": seed, "skipped": box.why_not}
        with server(work_dir, box) as srv:
            log(f"survival: hostile minute, {mode} mode, seed {seed}")
            box.reset_peak()
            watchdog_before = srv.memory()["watchdog"]
            recorder = MemoryRecorder(box.group, srv.admin)
            recorder.start()
            jobs, started = mix(seed), time.monotonic()
            with ThreadPoolExecutor(len(jobs)) as pool:
                ids = list(pool.map(lambda job: srv.submit(**job.request())["id"], jobs))
            done = [srv.wait(task_id, HOSTILE_GIVE_UP_S) for task_id in ids]
            took_s = time.monotonic() - started
            probe, watchdog = recorder.stop(), srv.memory()["watchdog"]
            assert srv.proc is not None
            api_alive = srv.proc.poll() is None and srv.client.get("/healthz").status_code == 200
            figures = box.figures()
    # The watchdog thread's CPU during the minute (at 0.5 CPU in Render mode), and its rounds
    cpu_s, rounds = (
        watchdog["cpu_s"] - watchdog_before["cpu_s"],
        watchdog["rounds"] - watchdog_before["rounds"],
    )
    run = {"mode": mode, "seed": seed, "took_s": round(took_s, 1), "api_alive": api_alive}
    return {**run, **_judged(jobs, done), "watchdog": f"{cpu_s:.2f} ({rounds})", **probe, **figures}


def _judged(jobs: list[HostileJob], done: list[dict[str, Any]]) -> dict[str, Any]:
    """How the tasks ended, by job: as expected, final with a reason."""
    by_label: dict[str, Counter[str]] = defaultdict(Counter)
    for job, task in zip(jobs, done, strict=True):
        by_label[job.label][outcome(task)] += 1
    expected = [not job.expect or outcome(task) in job.expect for job, task in zip(jobs, done, strict=True)]
    return {
        "tasks": len(done),
        "succeeded": sum(task["state"] == "succeeded" for task in done),
        "as_expected": sum(expected),
        "with_reason": sum(task["state"] == "succeeded" or bool(task["reason"]) for task in done),
        "outcomes": "; ".join(f"{label}: {fmt(dict(c))}" for label, c in sorted(by_label.items())),
    }


def summarize(
    ours: dict[str, Any], baselines: dict[str, dict[str, Any]], hostile: list[dict[str, Any]]
) -> dict[str, Any]:
    rows = [{"system": "**memvisor**", **_row(ours)}]
    rows += [{"system": f"seed way: {mode}", **_row(result)} for mode, result in baselines.items()]
    for row in rows:
        row["goodput_ratio"] = ratio(row["goodput_per_s"], rows[0]["goodput_per_s"])
    health = "200" if ours["healthy_after"] else "failed"
    return {
        "rows": rows,
        "hostile": hostile,
        "kinds": ", ".join(sorted({job["kind"] for job in ours["jobs"]})),
        "probe": f"{ours['probe_failures']} failed admin polls, slowest answer {ours['probe_slowest_s']} s; "
        f"/healthz after the run: {health}",
        "aims": _aims(ours, [r for r in hostile if "skipped" not in r]),
    }


def _row(result: dict[str, Any]) -> dict[str, Any]:
    """Lost: no answer at all (the process died, the task never ended, or a broken pool took it)."""
    outcomes = result["outcomes"]
    states = Counter("lost" if o["state"] in ("lost", "unfinished") else o["state"] for o in outcomes)
    ended = [o["ended"] for o in outcomes if o.get("ended")]
    broken_s = result.get("pool_broken_at_s")
    return {
        "tasks": len(outcomes),
        "answered": len(outcomes) - states["lost"],
        **{state: states[state] for state in ("succeeded", "killed", "failed", "lost", "refused")},
        "by_reason": dict(Counter(f"{o['state']}/{o.get('reason') or '-'}" for o in outcomes)),
        "goodput_per_s": states["succeeded"] / (max(ended) - result["started"]) if ended else None,
        "container_oom_kills": result.get("container_oom_kills"),
        "container_max_usage_mb": result.get("container_max_usage_mb"),
        "process_deaths": len(result.get("deaths", [])),
        "pool": "-" if broken_s is None else f"broken at {broken_s} s",
    }


def _aims(ours: dict[str, Any], played: list[dict[str, Any]]) -> list[dict[str, Any]]:
    limit_mb = ours.get("limit_mb") or 512
    peak_mb = ours["container_max_usage_mb"]
    figure = f"container OOM kills {fmt(ours['container_oom_kills'])}, max usage {fmt(peak_mb)} MB"
    met = ours.get("container_oom_kills") == 0 and (ours.get("container_max_usage_mb") or 0) < limit_mb
    rows = [aim("4 survival", figure, f"0 OOM kills, usage < {limit_mb} MB", met)]
    if played:
        ooms = sum(r["container_oom_kills"] or 0 for r in played)
        worst_mb = max(r["container_max_usage_mb"] or 0 for r in played)
        figure = f"hostile minute, {len(played)} runs (Render and lab mode): container OOM kills {ooms}, "
        figure += f"max usage {fmt(worst_mb)} MB"
        met = all(
            r["container_oom_kills"] == 0 and (r["container_max_usage_mb"] or 0) < (r["limit_mb"] or 512)
            and r["api_alive"] and r["with_reason"] == r["as_expected"] == r["tasks"]
            for r in played
        )  # fmt: skip
        target = "0 OOM kills, usage < 512 MB, API alive, every task final with a reason and as expected"
        rows.append(aim("4 survival", figure, target, met))
    return rows
