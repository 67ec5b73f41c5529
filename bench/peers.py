"""The ways to run a no-op task in a fresh process that scenario 2 compares, each timed in a child
process of the suite:

    python -m bench.peers ENGINE --tasks-json '{"1": 100, "8": 200}' --warmup N --max-s S [--data-dir D]

Engines: ``memvisor-inprocess`` (a ``supervisor.core.Supervisor`` in this process's event loop, as
api/app.py builds it: memvisor without HTTP), ``ppe-forkserver`` / ``ppe-spawn``
(concurrent.futures.ProcessPoolExecutor with max_tasks_per_child=1, so every task gets a new process),
``mp-forkserver`` (multiprocess's forkserver, Process start+join: the library the first design
proposed, see docs/architecture.md), ``fork`` (bare os.fork + os._exit + waitpid: the floor). The
peers import only the stdlib (and multiprocess); spawn and forkserver children import this again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.stats import gathered, threaded

ENGINES = ("memvisor-inprocess", "ppe-forkserver", "ppe-spawn", "mp-forkserver", "fork")
WAIT_S = 60.0


def noop() -> None:
    """The task: nothing, so that what is timed is the process machinery alone."""


def _fork_once() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


def _mp_start_join() -> None:
    import multiprocess

    process = multiprocess.get_context("forkserver").Process(target=noop)
    process.start()
    process.join()


@contextmanager
def _runner(engine: str, concurrency: int) -> Iterator[Callable[[], None]]:
    if engine.startswith("ppe-"):
        context = multiprocessing.get_context(engine.removeprefix("ppe-"))
        with ProcessPoolExecutor(concurrency, mp_context=context, max_tasks_per_child=1) as pool:
            yield lambda: pool.submit(noop).result()
    else:
        yield _mp_start_join if engine == "mp-forkserver" else _fork_once


def measure(engine: str, tasks: dict[int, int], warmup: int, max_s: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for concurrency, count in tasks.items():
        with _runner(engine, concurrency) as run_one:
            threaded(run_one, warmup, concurrency, max_s)  # starts the fork server / pool processes
            runs[str(concurrency)] = threaded(run_one, count, concurrency, max_s)
    return runs


async def measure_inprocess(
    data_dir: Path, tasks: dict[int, int], warmup: int, max_s: float
) -> dict[str, Any]:
    """memvisor without HTTP, on the same no-op task as the peers."""
    from supervisor.config import SupervisorSettings
    from supervisor.core import Submission, Supervisor
    from workers.catalog import load_catalog
    from workers.config import KindSettings

    catalog = load_catalog(KindSettings(enable_diagnostic_tasks=True))
    supervisor = Supervisor(SupervisorSettings(data_dir=data_dir), catalog)
    await supervisor.start()

    async def run_one() -> None:
        row = await supervisor.submit(Submission(kind="diag.sleep", payload={"seconds": 0}))
        done = await supervisor.wait(row.id, WAIT_S)
        if done.state != "succeeded":
            raise RuntimeError(f"task {done.id} ended {done.state} ({done.reason})")

    runs: dict[str, Any] = {}
    try:
        for concurrency, count in tasks.items():
            await gathered(run_one, warmup, concurrency, max_s)
            runs[str(concurrency)] = await gathered(run_one, count, concurrency, max_s)
    finally:
        await supervisor.stop()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--tasks-json", required=True)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--max-s", type=float, default=10.0, help="no task starts after this long")
    parser.add_argument("--data-dir", type=Path, help="memvisor-inprocess's data directory")
    args = parser.parse_args()
    tasks = {int(c): int(n) for c, n in json.loads(args.tasks_json).items()}
    if args.engine == "memvisor-inprocess":
        args.data_dir.mkdir(parents=True, exist_ok=True)
        runs = asyncio.run(measure_inprocess(args.data_dir, tasks, args.warmup, args.max_s))
    else:
        runs = measure(args.engine, tasks, args.warmup, args.max_s)
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
