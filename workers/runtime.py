"""The life of one worker process: join a new session, take one task over ZeroMQ, run it, exit.

This runs in a process forked by the zygote. It owns no policy: the supervisor decides when it is
killed, and a worker never kills anything itself.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import zmq

from workers import protocol, sandbox
from workers.errors import ResultTooLargeError
from workers.lifeline import EXIT_NO_ACK, EXIT_NO_TASK, EXIT_OK, die_with_parent
from workers.limits import WORKER_OOM_SCORE_ADJ, apply_task_limits, raise_oom_score, release_frames
from workers.procname import WORKER_NAME, set_process_name
from workers.registry import TaskContext, get_kind

log = logging.getLogger(__name__)

TASK_WAIT_MS = 15_000
ACK_WAIT_MS = 10_000


def worker_main(task_id: str, attempt: int, endpoint: str, threads: int, spare: bool = False) -> None:
    """Entry point, called by the zygote's fork. Never returns.

    A spare is forked before any task needs it, under an identity of its own, and waits for as long
    as the supervisor keeps it; it still runs one task and exits.
    """
    os.setsid()  # own process group: the supervisor kills the whole tree with one killpg
    die_with_parent(EXIT_NO_TASK)  # if the zygote dies, its workers die too, never unsupervised
    raise_oom_score(WORKER_OOM_SCORE_ADJ)  # the kernel's first choice, never the API
    _limit_threads(threads)
    # Last step before ZeroMQ starts a thread: anything that needs the zygote's privileges goes above.
    sandbox.at_fork()
    code = EXIT_NO_TASK
    try:
        code = _serve(task_id, attempt, endpoint, None if spare else TASK_WAIT_MS)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # skip heavy libraries' atexit hooks: the process is done


def _serve(task_id: str, attempt: int, endpoint: str, task_wait_ms: int | None) -> int:
    ctx = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, protocol.routing_id(task_id, attempt))
    sock.connect(endpoint)
    try:
        sock.send(protocol.encode(protocol.READY, pid=os.getpid()))
        task = _receive(sock, protocol.TASK, task_wait_ms)
        if task is None:
            log.error("task %s pid %d: no task received", task_id, os.getpid())
            return EXIT_NO_TASK
        apply_task_limits(task.get("limits"))
        set_process_name(WORKER_NAME)
        sock.send(_run(task, sock))
        return EXIT_OK if _receive(sock, protocol.ACK, ACK_WAIT_MS) else EXIT_NO_ACK
    finally:
        sock.close(linger=0)
        ctx.term()


def _receive(sock: zmq.Socket[bytes], msg_type: str, timeout_ms: int | None) -> dict[str, Any] | None:
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    msg = protocol.decode(sock.recv(), protocol.SUPERVISOR_TYPES)
    return msg if msg["type"] == msg_type else None


def _run(task: dict[str, Any], sock: zmq.Socket[bytes]) -> bytes:
    """Run the task and encode its outcome; every exception becomes an error message."""
    try:
        sandbox.enter_task(task)  # secrets in, filesystem fenced: before the kind's code is imported
        importlib.import_module(task["module"])
        spec = get_kind(task["kind"])
        payload = spec.input_model.model_validate(task["payload"])
        context = TaskContext(
            task_id=task["task_id"],
            data_dir=Path(task["data_dir"]),
            spool_dir=Path(task["spool_dir"]),
            output=Path(task["output_dir"]) if task.get("output_dir") else None,
            send_progress=lambda data: _send_progress(sock, data),
        )
        result = spec.fn(payload, context)
        frame = protocol.encode(protocol.RESULT, result=result)
        if len(frame) > protocol.MAX_FRAME_BYTES:  # the broker would drop it unread
            raise ResultTooLargeError(len(frame), protocol.MAX_FRAME_BYTES)
        return frame
    except Exception as exc:  # the task's failure is data for the supervisor, not a worker crash
        release_frames(exc)
        log.info("task %s pid %d failed: %s", task.get("task_id"), os.getpid(), exc)
        if not _is_input_error(exc):
            traceback.print_exc()
        error = {"type": type(exc).__name__, "message": str(exc)[:4000], "transient": _is_transient(exc)}
        return protocol.encode(protocol.ERROR, error=error)


def _send_progress(sock: zmq.Socket[bytes], data: dict[str, Any]) -> None:
    with contextlib.suppress(zmq.Again):  # progress is advisory: never block the task on a slow reader
        sock.send(protocol.encode(protocol.PROGRESS, data=data), zmq.NOBLOCK)


def _is_transient(exc: Exception) -> bool:
    from workers.errors import TransientError

    return isinstance(exc, TransientError)


def _is_input_error(exc: Exception) -> bool:
    from pydantic import ValidationError

    from workers.errors import TaskInputError

    return isinstance(exc, (TaskInputError, ValidationError))


def _limit_threads(threads: int) -> None:
    """Native libraries size their thread pools from these at import, so set them before any import."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "ORT_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
