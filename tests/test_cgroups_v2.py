"""The kernel backstop in a delegated cgroup v2 subtree, and the choice of backstop.

No cgroup v2 memory controller can be mounted on these machines (their memory hierarchy is v1, and
the v2 mount has no controllers), so ``DelegatedCgroups`` is checked against a fake cgroupfs tree in
tmp_path laid out as a systemd user service with ``Delegate=yes`` presents it: what is written where,
and in what order. Directories are really made and removed; the kernel's answers (memory.events) are
written by the test. How a real kernel takes these writes is not tested here.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from supervisor import cgroups_v2
from supervisor.backstop import Backstop, CgroupFacts, choose, facts, open_backstop
from supervisor.cgroups_v2 import API_LEAF, DelegatedCgroups
from supervisor.host import WorkerHost
from supervisor.memory import Cgroup, own_cgroup
from supervisor.privileges import Privileges
from supervisor.privileges_config import PrivilegeSettings
from supervisor.states import Reason, State
from supervisor.verdict import Ending, judge
from supervisor.worker import RunningWorker
from workers.catalog import Catalog
from workers.units import MB

SERVICE = "user.slice/user-10001.slice/user@10001.service/app.slice/memvisor.service"
Writes = list[tuple[str, str]]


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A cgroup2 mount at tmp_path/cgroup with our service's cgroup (two processes in it), and a /proc
    whose self/cgroup points there."""
    root = tmp_path / "cgroup"
    service = root / SERVICE
    service.mkdir(parents=True)
    files = {
        "cgroup.controllers": "cpu memory pids\n",
        "cgroup.subtree_control": "\n",
        "cgroup.procs": "4242\n4243\n",
        "memory.current": f"{100 * MB}\n",
        "memory.max": f"{512 * MB}\n",
        "memory.stat": "anon 0\nfile 0\nshmem 0\n",
        "memory.events": "oom 0\noom_kill 0\n",
    }
    for name, text in files.items():
        (service / name).write_text(text)
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(f"0::/{SERVICE}\n")
    return root, tmp_path / "proc"


@pytest.fixture
def writes(tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Writes:
    """Every write of the backend, as (path below the service cgroup, text), in order. Not written to
    disk: in a real cgroupfs the interface files exist already and rmdir ignores them."""
    service = tree[0] / SERVICE
    recorded: Writes = []
    monkeypatch.setattr(
        cgroups_v2, "_write", lambda path, text: recorded.append((str(path.relative_to(service)), text))
    )
    return recorded


def _open(tree: tuple[Path, Path]) -> DelegatedCgroups:
    cgroups = open_backstop(*tree)
    assert isinstance(cgroups, DelegatedCgroups)
    return cgroups


@pytest.mark.parametrize(
    ("version", "writable", "memory", "delegated"),
    list(itertools.product([None, 1, 2], [False, True], [False, True], [False, True])),
)
def test_the_backstop_needs_every_precondition(
    version: int | None, writable: bool, memory: bool, delegated: bool
) -> None:
    """Every combination of what the cgroup files can say (24: enumerated, not sampled)."""
    backstop, why = choose(CgroupFacts(version, writable, memory, delegated))
    assert why
    if version == 1 and writable:
        assert backstop is Backstop.V1
    elif version == 2 and writable and memory and delegated:
        assert backstop is Backstop.V2_DELEGATED
    else:
        assert backstop is Backstop.NONE


def test_facts_of_a_delegated_v2_tree(tree: tuple[Path, Path]) -> None:
    cgroup = own_cgroup(root=tree[0], proc=tree[1])
    assert facts(cgroup) == CgroupFacts(2, True, True, True)
    assert cgroup is not None
    (cgroup.path / "cgroup.controllers").write_text("cpu pids\n")  # memory not delegated to us
    assert choose(facts(cgroup))[0] is Backstop.NONE
    assert facts(None) == CgroupFacts(None, False, False, False)


def test_processes_move_to_a_leaf_before_the_memory_controller_is_enabled(
    tree: tuple[Path, Path], writes: Writes
) -> None:
    cgroups = _open(tree)
    pool = f"memvisor-{os.getpid()}"
    assert writes == [
        (f"{API_LEAF}/cgroup.procs", "4242"),  # the no-internal-processes rule: first empty our cgroup
        (f"{API_LEAF}/cgroup.procs", "4243"),
        ("cgroup.subtree_control", "+memory"),
        (f"{pool}/cgroup.subtree_control", "+memory"),
    ]
    service = tree[0] / SERVICE
    assert {p.name for p in service.iterdir() if p.is_dir()} == {API_LEAF, pool}
    assert (service / pool / "zygote").is_dir()
    assert cgroups.pool.path == service / pool and cgroups.pool.version == 2


def test_workers_get_leaves_with_their_ceilings(tree: tuple[Path, Path], writes: Writes) -> None:
    cgroups = _open(tree)
    pool = cgroups.pool.path.name
    del writes[:]
    cgroups.adopt(777)
    cgroups.set_pool_limit(400)
    task = cgroups.add("task-abc-1", 200)
    spare = cgroups.add("task-spare-x-0", None)
    assert task is not None and spare is not None
    cgroups.set_limit(spare, 150)
    assert writes == [
        (f"{pool}/zygote/cgroup.procs", "777"),  # the zygote in a leaf of its own, beside the workers
        (f"{pool}/memory.max", str(400 * MB)),
        (f"{pool}/task-abc-1/memory.oom.group", "1"),  # an OOM kills the worker's whole tree
        (f"{pool}/task-abc-1/memory.max", str(200 * MB)),
        (f"{pool}/task-spare-x-0/memory.oom.group", "1"),
        (f"{pool}/task-spare-x-0/memory.max", str(150 * MB)),  # when the spare takes its task
    ]
    assert task.version == 2 and task.path.is_dir()
    del writes[:]
    cgroups.remove(task)
    assert writes == [(f"{pool}/task-abc-1/cgroup.kill", "1")]
    assert not task.path.exists()
    cgroups.close()
    service = tree[0] / SERVICE
    assert [p.name for p in service.iterdir() if p.is_dir()] == [API_LEAF]  # the API stays in its leaf


def test_an_oom_kill_in_a_worker_leaf_is_its_ceiling_and_not_the_pools(
    tree: tuple[Path, Path], writes: Writes, tmp_path: Path
) -> None:
    privileges = Privileges(PrivilegeSettings(), Catalog({}, {}, ()), tmp_path)
    host = WorkerHost((), use_cgroups=True, privileges=privileges)
    host.cgroups = _open(tree)
    worker = RunningWorker("t1", "diag.alloc", 1, b"t1:1", 200, 200, 60, False, 1)
    worker.cgroup = host.cgroups.add("task-t1-1", 200)
    assert worker.cgroup is not None
    assert not worker.cgroup_oom()  # memory.events not written yet: no kill
    # What the kernel writes when the worker's tree reaches its memory.max; v2 counts it in every
    # ancestor's memory.events too, but in the pool's memory.events.local only if the pool's limit acted.
    (worker.cgroup.path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    pool = host.cgroups.pool.path
    (pool / "memory.events").write_text("oom 1\noom_kill 1\n")
    (pool / "memory.events.local").write_text("oom 0\noom_kill 0\n")
    assert worker.cgroup_oom()
    assert not host.new_pool_oom()
    verdict = judge(Ending(exit_code=-9, task_oom=worker.cgroup_oom(), pool_oom=host.new_pool_oom()))
    assert (verdict.state, verdict.reason) == (State.KILLED, Reason.MEMORY_CEILING)
    (pool / "memory.events.local").write_text("oom 1\noom_kill 0\n")  # the pool's own limit acted
    assert host.new_pool_oom() and not host.new_pool_oom()  # counted once


def test_a_refusing_kernel_leaves_the_watchdog_alone(
    tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EBUSY from subtree_control (a process we could not move): no backstop, nothing half made."""

    def refuse(path: Path, text: str) -> None:
        if path.name == "cgroup.subtree_control":
            raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(cgroups_v2, "_write", refuse)
    assert open_backstop(*tree) is None
    service = tree[0] / SERVICE
    assert [p.name for p in service.iterdir() if p.is_dir()] == [API_LEAF]


def test_started_again_inside_its_own_leaf(tree: tuple[Path, Path], writes: Writes) -> None:
    root = tree[0]
    (root / SERVICE / API_LEAF).mkdir()
    (root / SERVICE / API_LEAF / "cgroup.procs").write_text("4242\n")
    cgroups = DelegatedCgroups.open_in(Cgroup(2, root / SERVICE / API_LEAF, root))
    assert cgroups is not None and cgroups.pool.path.parent == root / SERVICE
