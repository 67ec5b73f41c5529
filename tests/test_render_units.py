"""Render's side of the memory model without a service: the cgroup v2 readers against a fake
cgroupfs tree, the CPU quota reader, and the pure decisions (reservations, RLIMIT_DATA, verdicts).

No cgroup v2 memory controller can be mounted on these machines (their hierarchy is v1, and the v2
mount has no controllers), so the v2 readers are checked against files laid out as a Kubernetes
container's cgroup presents them (/sys/fs/cgroup/kubepods.slice/.../memory.*), in tmp_path.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from harness.server import run_fresh
from supervisor.admission import plan, reserve_mb
from supervisor.config import SupervisorSettings
from supervisor.enforcement import Enforcement, task_limits
from supervisor.memory import own_cgroup
from supervisor.states import Reason, State
from supervisor.verdict import Ending, judge
from workers.cpu import cpu_quota
from workers.limits import data_limit_bytes
from workers.units import MB

POD = "kubepods.slice/kubepods-burstable.slice/pod1/cri-containerd-abc.scope"
STAT = "anon 104857600\nfile 62914560\nshmem 20971520\ninactive_file 31457280\nactive_file 10485760\n"


def _fake_v2(tmp_path: Path, pod_max: str = str(512 * MB), leaf_max: str = "max") -> tuple[Path, Path]:
    """A cgroup2 mount at tmp_path/cgroup and a /proc whose self/cgroup points into it."""
    root = tmp_path / "cgroup"
    leaf = root / POD
    leaf.mkdir(parents=True)
    (root / "kubepods.slice" / "memory.max").write_text(f"{2048 * MB}\n")
    (leaf.parent / "memory.max").write_text(f"{pod_max}\n")
    (leaf / "memory.max").write_text(f"{leaf_max}\n")
    (leaf / "memory.current").write_text(f"{200 * MB}\n")
    (leaf / "memory.stat").write_text(STAT)
    (leaf / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n")
    (leaf / "memory.oom.group").write_text("1\n")
    (leaf / "cpu.max").write_text("50000 100000\n")
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::/{POD}\n")
    return root, tmp_path / "proc"


def test_v2_cgroup_is_found_and_read_as_kubernetes_lays_it_out(tmp_path: Path) -> None:
    root, proc = _fake_v2(tmp_path)
    cgroup = own_cgroup(root=root, proc=proc)
    assert cgroup is not None and cgroup.version == 2 and cgroup.path == root / POD
    assert cgroup.limit_bytes() == 512 * MB  # the pod's limit: the tightest up the tree
    assert cgroup.working_set_bytes() == (200 - 30) * MB  # current - inactive_file
    assert cgroup.breakdown_mb() == {"anon": 100.0, "file": 60.0, "shmem": 20.0}
    # Page cache other than shmem can be dropped; tmpfs (/dev/shm) cannot.
    assert cgroup.unreclaimable_bytes() == (200 - (60 - 20)) * MB
    assert cgroup.oom_kills() == 2
    assert cgroup.oom_group() is True
    assert cgroup.counters("memory.events")["oom_group_kill"] == 1


def test_v2_limit_reads_the_leaf_where_it_is_tighter_and_none_where_all_are_max(tmp_path: Path) -> None:
    root, proc = _fake_v2(tmp_path, leaf_max=str(300 * MB))
    cgroup = own_cgroup(root=root, proc=proc)
    assert cgroup is not None and cgroup.limit_bytes() == 300 * MB
    for path in root.rglob("memory.max"):
        path.write_text("max\n")
    assert cgroup.limit_bytes() is None
    (cgroup.path / "memory.oom.group").write_text("0\n")
    assert cgroup.oom_group() is False


def test_no_cgroup_where_the_files_are_missing(tmp_path: Path) -> None:
    root, proc = _fake_v2(tmp_path)
    (root / POD / "memory.current").unlink()
    assert own_cgroup(root=root, proc=proc) is None
    assert own_cgroup(pid=999999, root=root, proc=proc) is None


def test_cpu_quota_v2_and_v1(tmp_path: Path) -> None:
    root, proc = _fake_v2(tmp_path)
    assert cpu_quota(proc / "self" / "cgroup", root) == 0.5
    (root / POD / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(proc / "self" / "cgroup", root) is None
    v1 = tmp_path / "v1"
    group = v1 / "cpu" / "render"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("50000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    listing = tmp_path / "cgroup-v1"
    listing.write_text("4:memory:/x\n1:cpu:/render\n")
    assert cpu_quota(listing, v1) == 0.5


def test_enforcement_line_says_what_is_enforced() -> None:
    line = Enforcement(2, False, False, True, 10001, True, 32.0, 0.5).line()
    for part in ("cgroup v2 (read-only)", "oom.group 1", "uid 10001", "worker cgroups off", "RLIMIT_DATA on"):
        assert part in line
    assert "CPU quota 0.5 CPU" in line


def test_task_limits_follow_the_setting() -> None:
    on = SupervisorSettings(data_limit_slack_mb=16)
    assert task_limits(on, 300) == {"ceiling_mb": 300, "data_slack_mb": 16}
    assert task_limits(SupervisorSettings(worker_data_limit=False), 300)["data_slack_mb"] is None
    # A kind's own slack (the OCR kind's 256 MB) widens it, never narrows it; an exempt kind has none.
    assert task_limits(on, 300, slack_mb=256)["data_slack_mb"] == 256
    assert task_limits(on, 300, slack_mb=8)["data_slack_mb"] == 16
    assert task_limits(on, 300, data_limit=False, slack_mb=256)["data_slack_mb"] is None


# ----- pure decisions ------------------------------------------------------------------------------

mb = st.floats(1, 2000, allow_nan=False)


@given(estimate=mb, ceiling=mb)
def test_without_a_pool_backstop_a_task_reserves_what_it_may_grow_to(estimate: float, ceiling: float) -> None:
    assert reserve_mb(estimate, ceiling, pool_backstop=False) == ceiling
    assert reserve_mb(estimate, ceiling, pool_backstop=True) == min(estimate, ceiling)


@given(
    tasks=st.lists(st.tuples(mb, mb), max_size=30),
    budget=st.floats(0, 1000),
    slots=st.integers(0, 20),
)
def test_started_workers_can_never_outgrow_the_budget_without_a_backstop(
    tasks: list[tuple[float, float]], budget: float, slots: int
) -> None:
    """Whatever the estimates, what the started tasks may grow to (their ceilings) fits the budget."""
    needs: list[float | None] = [reserve_mb(e, c, pool_backstop=False) for e, c in tasks]
    decision = plan(needs, 0.0, budget, slots)
    assert sum(tasks[i][1] for i in decision.start) <= budget + 1e-6
    assert len(decision.start) <= slots


@given(
    data=st.integers(0, 4096 * MB),
    rss=st.integers(0, 4096 * MB),
    ceiling=st.floats(1, 4096),
    slack=st.floats(0, 512),
)
def test_data_limit_leaves_the_ceiling_headroom_and_no_more(
    data: int, rss: int, ceiling: float, slack: float
) -> None:
    limit = data_limit_bytes(data, rss, ceiling, slack)
    assert limit >= data + int(slack * MB)
    assert limit - data - int(slack * MB) == max(0, int(ceiling * MB) - rss)
    assert data_limit_bytes(data, rss, ceiling + 1, slack) >= limit


@given(
    limited=st.booleans(),
    kill=st.none() | st.sampled_from(list(Reason)),
    error=st.sampled_from(["MemoryError", "ValueError"]),
)
def test_a_memory_error_under_the_data_limit_is_the_ceiling(
    limited: bool, kill: Reason | None, error: str
) -> None:
    ending = Ending(
        exit_code=0,
        outcome={"error": {"type": error, "message": "m"}},
        kill_reason=kill,
        data_limited=limited,
    )
    verdict = judge(ending)
    if limited and error == "MemoryError" and kill in (None, Reason.MEMORY_CEILING):
        assert (verdict.state, verdict.reason) == (State.KILLED, Reason.MEMORY_CEILING)
        assert verdict.error_type == "MemoryError"
    else:
        assert (verdict.state, verdict.reason) == (State.FAILED, Reason.ERROR)


def test_rlimit_data_turns_a_runaway_allocation_into_memory_error() -> None:
    """In a fresh interpreter (as a worker is), with numpy and onnxruntime imported under the limit."""
    result = run_fresh(
        """
        import json, resource
        from workers.limits import limit_data
        limit = limit_data(ceiling_mb=300, slack_mb=32)
        import numpy as np
        a = np.ones((1000, 1000)) @ np.ones((1000, 1000))
        try:
            import onnxruntime
        except ImportError:
            pass
        try:
            block = bytearray(400 * 1024 * 1024)
            outcome = "allocated"
        except MemoryError:
            outcome = "MemoryError"
        small = bytearray(100 * 1024 * 1024)
        soft = resource.getrlimit(resource.RLIMIT_DATA)[0]
        print(json.dumps({"limit": limit, "outcome": outcome, "soft": soft}))
        """
    )
    assert result["outcome"] == "MemoryError"
    assert result["soft"] == result["limit"] != resource.RLIM_INFINITY


def test_process_tree_from_children_lists_matches_a_full_scan() -> None:
    """The watchdog's cheap walk finds the same tree as a scan of every process."""
    import subprocess

    from harness.server import until
    from supervisor.memory import process_tree

    parent = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    try:
        tree = until(
            lambda: len(process_tree(parent.pid)) == 3 and process_tree(parent.pid), 10, "2 children"
        )
        assert sorted(tree) == sorted(_scan_tree(parent.pid))
        assert process_tree(2**22 + 12345) == []  # no such process
    finally:
        for pid in process_tree(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.wait()


def _scan_tree(root: int) -> list[int]:
    """The reference: every process on the machine read from /proc/<pid>/stat, then walked from root."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:
                continue
            # The command name may contain spaces and parentheses: split after the last ')'.
            ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    tree, stack = [], [root]
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, ()))
    return tree
