"""The hostile minute: about fifty tasks submitted at once, in a seeded order, against a 512 MB
container. Shared by the Render test and the benchmark."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

BIG_CEILING_MB = 350  # under every budget measured (lab 374-393 MB, Render 408 MB): never refused at submit
# Stopped for memory: at its ceiling, or by the container guard (in lab mode the pool is shared)
STOPPED = ("killed/memory_ceiling", "killed/container_pressure")


@dataclass(frozen=True)
class Job:
    label: str  # what the job is, for grouping outcomes
    kind: str
    payload: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    expect: tuple[str, ...] = ()  # acceptable "state/reason" outcomes; empty: any final one

    def request(self) -> dict[str, Any]:
        return {"kind": self.kind, "payload": self.payload, **self.fields}


def _alloc(mb: int, rate_mb_s: float, hold_s: float = 0.5) -> dict[str, Any]:
    return {"mb": mb, "rate_mb_s": rate_mb_s, "hold_s": hold_s}


def mix(seed: int) -> list[Job]:
    """Allocators of 300 MB at 200 MB/s, 1 GB/s and flat out under 350 MB ceilings, trees of
    3 x 150 MB, segfaults, 2 GB allocations, and small tasks that must succeed; shuffled by ``seed``."""
    big = {"ceiling_mb": BIG_CEILING_MB}
    jobs: list[Job] = []
    for rate in (200, 1000, 0):
        jobs += [Job(f"alloc300@{rate}", "diag.alloc", _alloc(300, rate), big)] * 6
    jobs += [
        Job(
            "tree3x150",
            "diag.spawn",
            {"children": 3, "mb_each": 150, "hold_s": 2},
            expect=STOPPED,
        )
    ] * 5
    jobs += [Job("segfault", "diag.crash", {}, expect=("failed/crashed",))] * 5
    jobs += [Job("alloc2g", "diag.alloc", _alloc(2000, 0), big, expect=STOPPED)] * 5
    jobs += [Job("sleep", "diag.sleep", {"seconds": 0.2}, expect=("succeeded/-",))] * 10
    jobs += [Job("alloc50", "diag.alloc", _alloc(50, 0, hold_s=0.2), expect=("succeeded/-",))] * 6
    random.Random(seed).shuffle(jobs)
    return jobs


def outcome(task: dict[str, Any]) -> str:
    return f"{task['state']}/{task.get('reason') or '-'}"
