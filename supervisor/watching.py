"""Waiting for a task and streaming its changes, through whichever instance the client asked.

A change made here is published at once; one made by another instance arrives by NOTIFY where the
connection can LISTEN, and in any case by re-reading the row every ``Supervisor.recheck_s()``.
Progress events come only from the instance running the task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from supervisor.states import FINAL
from supervisor.store import TaskRow

if TYPE_CHECKING:
    from supervisor.core import Supervisor


async def wait(supervisor: Supervisor, task_id: str, wait_s: float) -> TaskRow:
    """The task once it is final, or as it is when ``wait_s`` runs out."""
    deadline = time.monotonic() + wait_s
    queue = supervisor.events.subscribe(task_id)  # before reading, so that no change can slip between
    try:
        row = await supervisor.get(task_id)
        while row.state not in FINAL and (left := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(left, supervisor.recheck_s()))
                if event.get("state") not in FINAL:
                    continue  # read once, when there is something final to read
            except TimeoutError:
                pass  # the deadline, or time to re-read a task another instance may have ended
            row = await supervisor.get(task_id)
        return row
    finally:
        supervisor.events.unsubscribe(task_id, queue)


async def watch(supervisor: Supervisor, task_id: str) -> AsyncIterator[tuple[str, Any]]:
    """``("state", row)`` now and on every change of the task's state or attempt until it is
    final, ``("progress", data)`` from its worker. Changes come from this instance, by NOTIFY
    from the others, or by re-reading the row; progress only from the instance running it."""
    queue = supervisor.events.subscribe(task_id)  # before reading, so that no change can slip between
    try:
        row = await supervisor.get(task_id)
        yield "state", row
        seen = (row.state, row.attempts)
        while row.state not in FINAL:
            try:
                event = await asyncio.wait_for(queue.get(), supervisor.recheck_s())
                if event["event"] == "progress":
                    yield "progress", event.get("data")
                    continue
            except TimeoutError:
                pass
            row = await supervisor.get(task_id)
            if (row.state, row.attempts) != seen:
                seen = (row.state, row.attempts)
                yield "state", row
    finally:
        supervisor.events.unsubscribe(task_id, queue)
