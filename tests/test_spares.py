"""Spare workers: forked ahead of need, each still runs exactly one task, and losing one costs nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness.server import Server, until
from tests.conftest import ServerFactory

SPARE_WAIT_S = 15


def _one_spare(server: Server, other_than: int = 0) -> int:
    pids: list[int] = until(
        lambda: (p := server.spare_pids()) and len(p) == 1 and p[0] != other_than and p,
        SPARE_WAIT_S,
        "one spare worker",
    )
    # Forked is not enough: a task takes a spare only once it said ready, else it forks afresh.
    until(lambda: server.memory()["spare_workers_ready"] == pids, SPARE_WAIT_S, "the spare to be ready")
    return pids[0]


def _cgroup_of(pid: int) -> str:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return next((line.split(":", 2)[2] for line in lines if ":memory:" in line), "")


def test_a_task_takes_the_spare_and_a_new_one_replaces_it(server: Server) -> None:
    spare = _one_spare(server)
    if server.memory()["worker_cgroups"]:
        assert "/task-spare-" in _cgroup_of(spare), "a spare waits in a cgroup of its own"
    done = server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])
    assert done["state"] == "succeeded"
    assert done["worker_pid"] == spare, "the task ran in the spare that was waiting"
    second = _one_spare(server, other_than=spare)
    done = server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])
    assert done["worker_pid"] == second, "each spare runs one task: the next one is a new process"
    server.wait_idle()


def test_a_spare_is_held_to_the_ceiling_of_the_task_it_takes(server: Server) -> None:
    spare = _one_spare(server)
    task = server.submit("diag.alloc", {"mb": 300, "rate_mb_s": 0, "hold_s": 5}, ceiling_mb=150)
    done = server.wait(task["id"])
    assert done["worker_pid"] == spare
    assert (done["state"], done["reason"]) == ("killed", "memory_ceiling")
    assert done["ceiling_mb"] == 150
    server.wait_idle()


def test_a_killed_spare_is_replaced_and_no_task_notices(server: Server) -> None:
    spare = _one_spare(server)
    os.kill(spare, signal.SIGKILL)
    replacement = _one_spare(server, other_than=spare)
    done = server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])
    assert done["state"] == "succeeded"
    assert done["worker_pid"] == replacement
    stats = server.admin.get("/admin/stats").json()
    assert sum(stats["tasks_by_kind"]["diag.sleep"].values()) == 1, "the lost spare was nobody's task"
    server.wait_idle()


def test_no_spare_when_switched_off(make_server: ServerFactory) -> None:
    server = make_server(env={"SPARE_WORKERS": "0"}).start()
    done = server.wait(server.submit("diag.sleep", {"seconds": 0})["id"])
    assert done["state"] == "succeeded"
    server.wait_idle()
    assert server.spare_pids() == [] and server.memory()["spare_workers"] == []
