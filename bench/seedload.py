"""The survival workload run the seed's way, in its own fresh 512 MB container each:

- ``threads``: every job runs in a thread of one process (the seed design: the web process does the
  work itself). A segfault or a kernel OOM kill takes the whole process down, with every job in it;
  the driver then restarts it at once, as Render would restart the service (faster, in fact: this
  process imports only the task modules, not the seed's 448 MB of libraries).
- ``pool``: every job goes through one ``concurrent.futures.ProcessPoolExecutor`` (fork, the default
  here). One worker lost to a segfault or an OOM kill breaks the pool for good (BrokenProcessPool):
  nothing in the seed rebuilds it, so every later job would fail at once. The child stops there
  (the jobs in flight are lost; goodput is zero from then to the end of the run).

The driver (``run``) sits outside the container and reads one JSON line per event from the child:

    python -m bench.seedload CONFIG.json FIRST_JOB|setup
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from bench import workload
from bench.plan import Context, Plan
from bench.probes import MemoryRecorder
from bench.service import Box, container, log, run_child
from bench.stats import threaded

MODES = ("threads", "pool")
MODULES = {"diag": "workers.diagnostic", "rag": "workers.rag", "agent": "workers.agent", "ocr": "workers.ocr"}
SETUP_TIMEOUT_S = 300
DRAIN_S = 300  # after the deadline, how long in-flight jobs may take

# ----- the child: runs jobs and reports ---------------------------------------------------------------


def run_job(job: dict[str, Any], data_dir: str, spool_dir: str) -> None:
    """One job, the way the seed calls a task function: directly, in whatever process this is."""
    from workers.registry import TaskContext, get_kind

    importlib.import_module(MODULES[job["kind"].split(".")[0]])
    spec = get_kind(job["kind"])
    payload = spec.input_model.model_validate(job["payload"])
    context = TaskContext(f"seed-{job['index']}", Path(data_dir), Path(spool_dir), lambda _: None)
    spec.fn(payload, context)


def _pid(_: int) -> int:
    return os.getpid()


def serve(config: dict[str, Any], first: int) -> None:
    """Play the jobs from ``first`` on with ``clients`` threads until the deadline (or until the pool
    breaks), one JSON line per event on stdout."""
    jobs, lock = iter(config["jobs"][first:]), threading.Lock()
    dirs = (config["data_dir"], config["spool_dir"])
    # Everything is imported, and the pool's processes forked, before any other thread exists:
    # forking while a thread holds the import lock would hang the child (a bench artefact).
    for kind in {job["kind"] for job in config["jobs"]}:
        importlib.import_module(MODULES[kind.split(".")[0]])
    broken = threading.Event()  # the pool broke: no job is taken any more
    pool = ProcessPoolExecutor(config["clients"]) if config["mode"] == "pool" else None
    if pool is not None:
        list(pool.map(_pid, range(config["clients"])))

    def emit(event: dict[str, Any]) -> None:
        with lock:
            print(json.dumps({**event, "t": time.time()}), flush=True)

    def play_one() -> None:
        with lock:
            job = None if broken.is_set() else next(jobs, None)
        if job is None:
            return
        emit({"event": "start", "i": job["index"]})
        state, error = "succeeded", None
        try:
            if pool is None:
                run_job(job, *dirs)
            else:
                pool.submit(run_job, job, *dirs).result()
        except BrokenProcessPool:  # no answer: lost, like every job in flight
            state, error = "lost", "BrokenProcessPool"
            broken.set()
            emit({"event": "pool_broken"})
        except Exception as exc:  # the job's failure: reported, as the seed would log it
            state, error = "failed", type(exc).__name__
        emit({"event": "end", "i": job["index"], "state": state, "error_type": error})

    threaded(play_one, len(config["jobs"]) - first, config["clients"], config["deadline"] - time.time())
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


def child_main(config_path: str, first: str) -> None:
    config = json.loads(Path(config_path).read_text())
    if first == "setup":  # the collection the queries read, before the clock starts
        job = {"index": -1, "kind": "rag.ingest", "payload": workload.setup_ingest()}
        run_job(job, config["data_dir"], config["spool_dir"])
    else:
        serve(config, int(first))


# ----- the driver: restarts the child when it dies, counts what was lost -------------------------------


def run(
    mode: str, sequence: list[workload.Job], plan: Plan, ctx: Context, image: bytes | None
) -> dict[str, Any]:
    work = ctx.work_dir / f"seed-{mode}"
    config: dict[str, Any] = {"mode": mode, "clients": plan.survival_clients}
    config["jobs"] = [job.as_dict() for job in sequence]
    for name in ("data_dir", "spool_dir"):
        config[name] = str(work / name)
        (work / name).mkdir(parents=True, exist_ok=True)
    if image is not None:
        (work / "spool_dir" / workload.OCR_FILE).write_bytes(image)
    cmd = [sys.executable, "-m", "bench.seedload", str(work / "config.json")]
    with container() as box:
        (work / "config.json").write_text(json.dumps(config))
        if any(job.kind == "rag.query" for job in sequence):
            run_child([*cmd, "setup"], box, SETUP_TIMEOUT_S, ctx.repo)
        log(f"survival: seed way ({mode}), {plan.survival_s:g} s of the same jobs")
        box.reset_peak()
        recorder = MemoryRecorder(box.group)
        recorder.start()
        state = _DriveState(time.time(), {job.index: job.kind for job in sequence})
        config["deadline"] = state.started + plan.survival_s
        (work / "config.json").write_text(json.dumps(config))
        _drive([*box.wrap(), *cmd], box, ctx, state, config["deadline"])
        recorder.stop()
        figures = box.figures()
    return {
        "started": state.started,
        "outcomes": list(state.records.values()),
        "deaths": state.deaths,
        "pool_broken_at_s": state.pool_broken_at_s,
        "trace": recorder.samples,
        **figures,
    }


def _drive(cmd: list[str], box: Box, ctx: Context, state: _DriveState, deadline: float) -> None:
    """Run the child from the next unstarted job on, again each time it dies, until the deadline."""
    while True:
        code = _run_once([*cmd, str(state.next_index)], ctx, state, deadline)
        if code != 0:
            state.died(code, box.oom_kills())
        if code == 0 or time.time() >= deadline:
            return


class _DriveState:
    def __init__(self, started: float, kinds: dict[int, str]) -> None:
        self.started = started
        self.kinds = kinds
        self.records: dict[int, dict[str, Any]] = {}
        self.deaths: list[dict[str, Any]] = []
        self.pool_broken_at_s: float | None = None
        self.next_index = 0

    def apply(self, event: dict[str, Any]) -> None:
        if event["event"] == "start":
            index = event["i"]
            self.records[index] = {"index": index, "kind": self.kinds.get(index), "submitted": event["t"]}
            self.next_index = max(self.next_index, index + 1)
        elif event["event"] == "end":
            reason = event.get("error_type")
            self.records[event["i"]].update(state=event["state"], reason=reason, ended=event["t"])
        elif event["event"] == "pool_broken" and self.pool_broken_at_s is None:
            self.pool_broken_at_s = round(event["t"] - self.started, 2)

    def died(self, code: int, oom_kills: int | None) -> None:
        """Every job the dead process had started and not finished is lost."""
        now = time.time()
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        for record in self.records.values():
            if "state" not in record:
                record.update(state="lost", reason=f"process died ({how})", ended=now)
        self.deaths.append(
            {"at_s": round(now - self.started, 2), "exit": code, "container_oom_kills": oom_kills}
        )


def _run_once(cmd: list[str], ctx: Context, state: _DriveState, deadline: float) -> int:
    with (ctx.work_dir / "seed-child.log").open("ab") as errors:
        proc = subprocess.Popen(cmd, cwd=ctx.repo, stdout=subprocess.PIPE, stderr=errors)
        # A child stuck past the deadline would block the read below: kill it after the drain time.
        stuck = threading.Timer(max(0.0, deadline - time.time()) + DRAIN_S, proc.kill)
        stuck.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"{"):
                state.apply(json.loads(line))
        stuck.cancel()
        return proc.wait()


if __name__ == "__main__":
    child_main(*sys.argv[1:3])
