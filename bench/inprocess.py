"""memvisor without HTTP: a ``supervisor.core.Supervisor`` in this process's event loop (as
api/app.py builds it), timed on the same no-op task as the peers. Run as a child of the suite:

    python -m bench.inprocess --data-dir D --tasks-json '{"1": 100}' --warmup N --max-s S  -> JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bench.loop import gathered
from supervisor.config import SupervisorSettings
from supervisor.core import Submission, Supervisor
from workers.catalog import load_catalog
from workers.config import KindSettings

NOOP = Submission(kind="diag.sleep", payload={"seconds": 0})
WAIT_S = 60.0


async def measure(data_dir: Path, tasks: dict[int, int], warmup: int, max_s: float) -> dict[str, Any]:
    catalog = load_catalog(KindSettings(enable_diagnostic_tasks=True))
    supervisor = Supervisor(SupervisorSettings(data_dir=data_dir), catalog)
    await supervisor.start()

    async def run_one() -> None:
        row = await supervisor.submit(NOOP)
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
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--tasks-json", required=True)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--max-s", type=float, default=10.0)
    args = parser.parse_args()
    tasks = {int(c): int(n) for c, n in json.loads(args.tasks_json).items()}
    args.data_dir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(measure(args.data_dir, tasks, args.warmup, args.max_s))))


if __name__ == "__main__":
    main()
