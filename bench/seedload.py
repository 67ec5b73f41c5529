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

    python -m bench.seedload --mode threads|pool --jobs F --start I --clients K --deadline T ...
"""

from __future__ import annotations

import argparse
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
from bench.recorder import MemoryRecorder
from bench.service import container, container_figures, log, reset_peak, run_child, wrap_of
from harness.cgroup import LimitedCgroup

MODES = ("threads", "pool")
MODULES = {"diag": "workers.diagnostic", "rag": "workers.rag", "agent": "workers.agent", "ocr": "workers.ocr"}
SETUP_TIMEOUT_S = 300
DRAIN_S = 300  # after the deadline, how long in-flight jobs may take
REPO = Path(__file__).resolve().parent.parent
BROKEN = "BrokenProcessPool"  # a job the broken pool took down with it: no answer, so lost

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


class Child:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.jobs: list[dict[str, Any]] = json.loads(Path(args.jobs).read_text())
        self.next = args.start
        self.lock = threading.Lock()
        self.pool_broken = False
        # Everything is imported, and the pool's processes forked, before any other thread exists:
        # forking while a thread holds the import lock would hang the child (a bench artefact).
        for kind in {job["kind"] for job in self.jobs}:
            importlib.import_module(MODULES[kind.split(".")[0]])
        self.pool = ProcessPoolExecutor(args.clients) if args.mode == "pool" else None
        if self.pool is not None:
            list(self.pool.map(_pid, range(args.clients)))

    def emit(self, event: dict[str, Any]) -> None:
        with self.lock:
            print(json.dumps({**event, "t": time.time()}), flush=True)

    def take(self) -> dict[str, Any] | None:
        with self.lock:
            if time.time() >= self.args.deadline or self.next >= len(self.jobs) or self.pool_broken:
                return None
            job: dict[str, Any] = self.jobs[self.next]
            self.next += 1
            return job

    def client(self) -> None:
        while (job := self.take()) is not None:
            self.emit({"event": "start", "i": job["index"]})
            error = self.execute(job)
            state = "succeeded" if error is None else "lost" if error == BROKEN else "failed"
            self.emit({"event": "end", "i": job["index"], "state": state, "error_type": error})

    def execute(self, job: dict[str, Any]) -> str | None:
        try:
            if self.pool is None:
                run_job(job, self.args.data_dir, self.args.spool_dir)
            else:
                self.pool.submit(run_job, job, self.args.data_dir, self.args.spool_dir).result()
        except BrokenProcessPool:
            with self.lock:
                first, self.pool_broken = not self.pool_broken, True
            if first:
                self.emit({"event": "pool_broken"})
            return BROKEN
        except Exception as exc:  # the job's failure: reported, as the seed would log it
            return type(exc).__name__
        return None

    def serve(self) -> None:
        threads = [threading.Thread(target=self.client) for _ in range(self.args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def child_main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seedload")
    parser.add_argument("--mode", choices=(*MODES, "setup"), required=True)
    parser.add_argument("--jobs", default="")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=0.0)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--spool-dir", required=True)
    args = parser.parse_args()
    if args.mode == "setup":
        job = {"index": -1, "kind": "rag.ingest", "payload": workload.setup_ingest()}
        run_job(job, args.data_dir, args.spool_dir)
        return
    Child(args).serve()


# ----- the driver: restarts the child when it dies, counts what was lost -------------------------------


def run(
    mode: str, sequence: list[workload.Job], plan: Plan, ctx: Context, image: bytes | None
) -> dict[str, Any]:
    work = ctx.work_dir / f"seed-{mode}"
    dirs = {"data": work / "data", "spool": work / "spool"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    if image is not None:
        (dirs["spool"] / workload.OCR_FILE).write_bytes(image)
    jobs_file = work / "jobs.json"
    jobs_file.write_text(json.dumps([job.as_dict() for job in sequence]))
    common = ["--data-dir", str(dirs["data"]), "--spool-dir", str(dirs["spool"])]
    with container() as group:
        if any(job.kind == "rag.query" for job in sequence):
            setup = [sys.executable, "-m", "bench.seedload", "--mode", "setup", *common]
            run_child(setup, group, SETUP_TIMEOUT_S, ctx.repo)
        log(f"survival: seed way ({mode}), {plan.survival_s:g} s of the same jobs")
        cmd = [sys.executable, "-m", "bench.seedload", "--mode", mode, "--jobs", str(jobs_file), *common]
        cmd += ["--clients", str(plan.survival_clients)]
        return _drive(cmd, group, plan, work, {job.index: job.kind for job in sequence})


def _drive(
    cmd: list[str], group: LimitedCgroup | str, plan: Plan, work: Path, kinds: dict[int, str]
) -> dict[str, Any]:
    ooms_before = reset_peak(group)
    recorder = MemoryRecorder(group)
    recorder.start()
    started = time.time()
    state = _DriveState(started, kinds)
    while True:
        full = [*(wrap_of(group) or []), *cmd, "--start", str(state.next_index)]
        full += ["--deadline", str(started + plan.survival_s)]
        code = _run_once(full, work, state, started + plan.survival_s)
        if code != 0:
            state.died(code, _ooms_since(group, ooms_before))
        if code == 0 or time.time() >= started + plan.survival_s:
            break
    recorder.stop()
    return {
        "started": started,
        "outcomes": list(state.records.values()),
        "deaths": state.deaths,
        "pool_broken_at_s": state.pool_broken_at_s,
        "trace": recorder.samples,
        **container_figures(group, ooms_before),
    }


def _ooms_since(group: LimitedCgroup | str, before: int | None) -> int | None:
    if not isinstance(group, LimitedCgroup) or before is None:
        return None
    return group.oom_kills - before


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


def _run_once(cmd: list[str], work: Path, state: _DriveState, deadline: float) -> int:
    with (work / "child.log").open("ab") as errors:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=errors)
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
    child_main()
