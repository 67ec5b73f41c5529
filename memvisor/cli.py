"""The ``memvisor`` command: serve, run a task, list tasks and kinds.

    memvisor serve                                   # what `python -m api` does
    memvisor run KIND [--payload JSON] [--file PATH]... [--url URL]
    memvisor tasks [--state S] [--kind K] [--limit N]
    memvisor kinds

``--url`` (or MEMVISOR_URL) is where the task routes hang from; ``--api-key`` (MEMVISOR_API_KEY) or
``--token`` (MEMVISOR_TOKEN) authenticate. ``run`` prints the result as JSON on stdout and exits with
the code of how the task ended (``EXIT_CODES``); on a terminal it shows the task's progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from memvisor.errors import (
    ContainerPressure,
    KilledByAdmin,
    MemoryCeilingExceeded,
    MemvisorError,
    RequestRefused,
    TaskCancelled,
    TaskCrashed,
    TaskError,
    TaskFailed,
    TaskInterrupted,
    TaskTimedOut,
    TooBigForBudget,
    Unreachable,
    result_of,
)

EXIT_OK = 0
EXIT_TASK_FAILED = 1  # the task raised (reason `error`), or ended for a reason this client does not know
EXIT_USAGE = 2  # bad arguments: unknown option, --payload not a JSON object, a --file that cannot be read
EXIT_REFUSED = 3  # the service refused the request (unknown kind, invalid payload, queue full, 401...)
EXIT_UNREACHABLE = 4  # the service could not be reached
EXIT_INTERRUPTED_BY_USER = 130  # Ctrl-C: the task was cancelled
EXIT_CODES: dict[type[TaskError], int] = {
    TaskFailed: EXIT_TASK_FAILED,
    MemoryCeilingExceeded: 10,
    ContainerPressure: 11,
    TaskTimedOut: 12,
    TaskCrashed: 13,
    TaskCancelled: 14,
    TaskInterrupted: 15,
    TooBigForBudget: 16,
    KilledByAdmin: 17,
}


def exit_code_for(error: BaseException | None) -> int:
    """The exit code of ``memvisor run`` for how it ended (None: the task succeeded)."""
    if error is None:
        return EXIT_OK
    if isinstance(error, TaskError):
        return EXIT_CODES.get(type(error), EXIT_TASK_FAILED)
    if isinstance(error, Unreachable):
        return EXIT_UNREACHABLE
    if isinstance(error, RequestRefused):
        return EXIT_REFUSED
    return EXIT_TASK_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from api.main import serve  # reads and checks the settings; exits 2 on a bad one

        serve()
        return EXIT_OK
    try:
        return int(args.handler(args))
    except MemvisorError as exc:
        print(f"memvisor: {exc}", file=sys.stderr)
        return exit_code_for(exc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memvisor", description="Run heavy Python tasks within memory.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve the API on $HOST:$PORT (as `python -m api`)")
    run = commands.add_parser("run", help="run a task and print its result as JSON", parents=[_remote()])
    run.add_argument("kind")
    run.add_argument("--payload", default="{}", help="the payload, a JSON object")
    run.add_argument("--file", action="append", default=[], help="a file to attach (repeatable)")
    run.add_argument("--timeout-s", type=float, help="overrides the kind's timeout")
    run.add_argument("--ceiling-mb", type=float, help="overrides the kind's memory ceiling")
    run.set_defaults(handler=_run)
    tasks = commands.add_parser("tasks", help="list tasks, newest first", parents=[_remote()])
    tasks.add_argument("--state")
    tasks.add_argument("--kind")
    tasks.add_argument("--limit", type=int, default=20)
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks.set_defaults(handler=_tasks)
    kinds = commands.add_parser("kinds", help="list the task kinds", parents=[_remote()])
    kinds.add_argument("--json", action="store_true", help="print JSON instead of a table")
    kinds.set_defaults(handler=_kinds)
    return parser


def _remote() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    env = os.environ.get
    common.add_argument("--url", default=env("MEMVISOR_URL", "http://127.0.0.1:8000"))
    common.add_argument("--api-key", default=env("MEMVISOR_API_KEY"))
    common.add_argument("--token", default=env("MEMVISOR_TOKEN"))
    common.add_argument("--retries", type=int, default=5, help="after 429/503 or a failed connection")
    return common


def _client(args: argparse.Namespace) -> Any:
    from memvisor.client import Client

    return Client(args.url, api_key=args.api_key, token=args.token, retries=args.retries)


def _run(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        return _usage(f"--payload is not JSON: {exc}")
    if not isinstance(payload, dict):
        return _usage("--payload must be a JSON object")
    unreadable = [path for path in args.file if not os.path.isfile(path)]
    if unreadable:
        return _usage(f"--file: no such file: {', '.join(unreadable)}")
    with _client(args) as client:
        task = client.submit(
            args.kind, payload, files=args.file, timeout_s=args.timeout_s, ceiling_mb=args.ceiling_mb
        )
        try:
            final = _wait(client, task.task, sys.stderr)
        except KeyboardInterrupt:
            client.cancel(task.id)
            print(f"\nmemvisor: cancelled task {task.id}", file=sys.stderr)
            return EXIT_INTERRUPTED_BY_USER
    try:
        result = result_of(final)
    except TaskError as exc:
        print(f"memvisor: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    print(json.dumps(result, indent=2))
    return EXIT_OK


def _wait(client: Any, task: dict[str, Any], err: TextIO) -> dict[str, Any]:
    """The final task. On a terminal, follow its events and show a status line meanwhile."""
    if err.isatty():
        start = time.monotonic()
        note = ""
        for event in client.events(task["id"]):
            if event.event == "progress" and isinstance(event.data, dict):
                note = str(event.data.get("message", ""))
            elif event.event == "state":
                task = event.data
            elapsed_s = time.monotonic() - start
            err.write(f"\r\033[K{task['id'][:12]} {task['kind']} {task['state']} {elapsed_s:.1f} s {note}")
            err.flush()
        err.write("\r\033[K")
    final: dict[str, Any] = client.wait(task["id"])
    return final


def _tasks(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = client.tasks(state=args.state, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps(items, indent=2))
        return EXIT_OK
    rows = [(t["id"], t["kind"], t["state"], t.get("reason") or "", t["created_at"]) for t in items]
    _table(("id", "kind", "state", "reason", "created_at"), rows)
    return EXIT_OK


def _kinds(args: argparse.Namespace) -> int:
    with _client(args) as client:
        kinds = client.kinds()
    if args.json:
        print(json.dumps(kinds, indent=2))
        return EXIT_OK
    rows = [
        (k["name"], "yes" if k["enabled"] else f"no ({k['switch']})", k["estimate_mb"], k["ceiling_mb"])
        for k in kinds
    ]
    _table(("kind", "enabled", "estimate_mb", "ceiling_mb"), rows)
    return EXIT_OK


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    cells = [tuple(str(value) for value in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())


def _usage(message: str) -> int:
    print(f"memvisor: {message}", file=sys.stderr)
    return EXIT_USAGE
