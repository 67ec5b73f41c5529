"""The peers' way to run a no-op task in a fresh process, timed in a child process of the suite:

    python -m bench.peers ENGINE --tasks-json '{"1": 100, "8": 200}' --warmup N --max-s S  -> JSON

Engines: ``ppe-forkserver`` / ``ppe-spawn`` (concurrent.futures.ProcessPoolExecutor with
max_tasks_per_child=1, so every task gets a new process), ``mp-forkserver`` (multiprocess's
forkserver, Process start+join: the library the first design proposed, see docs/architecture.md),
``fork`` (bare os.fork + os._exit + waitpid: the floor). Only the stdlib (and multiprocess) is imported here.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from bench.loop import threaded

ENGINES = ("ppe-forkserver", "ppe-spawn", "mp-forkserver", "fork")


def noop() -> None:
    """The task: nothing, so that what is timed is the process machinery alone."""


def _fork_once() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


@contextmanager
def _runner(engine: str, concurrency: int) -> Iterator[Callable[[], None]]:
    if engine.startswith("ppe-"):
        context = multiprocessing.get_context(engine.removeprefix("ppe-"))
        with ProcessPoolExecutor(concurrency, mp_context=context, max_tasks_per_child=1) as pool:
            yield lambda: pool.submit(noop).result()
    elif engine == "mp-forkserver":
        import multiprocess

        mp_context = multiprocess.get_context("forkserver")

        def start_join() -> None:
            process = mp_context.Process(target=noop)
            process.start()
            process.join()

        yield start_join
    elif engine == "fork":
        yield _fork_once
    else:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


def measure(engine: str, tasks_by_concurrency: dict[int, int], warmup: int, max_s: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for concurrency, tasks in tasks_by_concurrency.items():
        with _runner(engine, concurrency) as run_one:
            threaded(run_one, warmup, concurrency, max_s)  # starts the fork server / pool processes
            runs[str(concurrency)] = threaded(run_one, tasks, concurrency, max_s)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--tasks-json", required=True)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--max-s", type=float, default=10.0, help="no task starts after this long")
    args = parser.parse_args()
    tasks = {int(c): int(n) for c, n in json.loads(args.tasks_json).items()}
    print(json.dumps(measure(args.engine, tasks, args.warmup, args.max_s)))


if __name__ == "__main__":
    main()
