"""In-process publish/subscribe of task events (state changes, progress) for waiters and streams."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

QUEUE_DEPTH = 256


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)

    def subscribe(self, task_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_DEPTH)
        self._subscribers[task_id].add(queue)
        return queue

    def unsubscribe(self, task_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        queues = self._subscribers.get(task_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._subscribers[task_id]

    def publish(self, task_id: str, event: dict[str, Any]) -> None:
        for queue in list(self._subscribers.get(task_id, ())):
            if queue.full():
                queue.get_nowait()  # a slow reader loses the oldest progress, never the final state
            queue.put_nowait(event)
