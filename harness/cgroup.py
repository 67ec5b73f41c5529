"""Real cgroups for the tests and the benchmark: the way to run the service as a 512 MB Render
instance would.

Two modes of the same 512 MB container:
- lab: the service runs as root and may create a memory cgroup per worker (the kernel backstop);
- render: as Render runs it — an unprivileged uid (10001, the image's USER) that can write no cgroup,
  under a 0.5-CPU quota (cgroup v1 ``cpu``: cfs_quota_us 50000 per 100000 period).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.memory import CGROUP_ROOT, own_cgroup
from workers.units import MB

RENDER_UID = 10001
RENDER_CPU_QUOTA_US = 50_000
CPU_PERIOD_US = 100_000


class LimitedCgroup:
    """A child of our own v1 memory cgroup with a hard limit; ``wrap`` runs a command inside it,
    optionally under a CPU quota and as another uid."""

    def __init__(self, limit_mb: int, cpu_quota_us: int | None = None, uid: int | None = None) -> None:
        parent = own_cgroup()
        if os.geteuid() != 0 or parent is None or parent.version != 1:
            raise PermissionError("needs root and a cgroup v1 memory hierarchy")
        name = f"memvisor-test-{uuid.uuid4().hex[:8]}"
        self.path = parent.path / name
        self.cpu_path: Path | None = None
        if cpu_quota_us is not None:
            cpu_root = CGROUP_ROOT / "cpu"
            if not (cpu_root / "cpu.cfs_quota_us").exists():
                raise PermissionError("no cgroup v1 cpu controller to set a CPU quota with")
            self.cpu_path = cpu_root / name
            self.cpu_path.mkdir()
            (self.cpu_path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (self.cpu_path / "cpu.cfs_quota_us").write_text(str(cpu_quota_us))
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit_mb * MB))
        self.limit_mb = limit_mb
        self.uid = uid

    def wrap(self) -> list[str]:
        join = f"echo $$ > {self.path}/cgroup.procs"
        if self.cpu_path is not None:
            join += f" && echo $$ > {self.cpu_path}/cgroup.procs"
        run = '"$0" "$@"'
        if self.uid is not None:
            run = f"setpriv --reuid={self.uid} --regid={self.uid} --clear-groups {run}"
        return ["sh", "-c", f"{join} && exec {run}"]

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    @property
    def max_usage_mb(self) -> float:
        return int(self.read("memory.max_usage_in_bytes")) / MB

    @property
    def oom_kills(self) -> int:
        fields = dict(line.split() for line in self.read("memory.oom_control").splitlines())
        return int(fields["oom_kill"])

    def remove(self) -> None:
        """Remove the group and any left inside it (there should be none once the server stopped)."""
        for child in sorted((p for p in self.path.rglob("*") if p.is_dir()), reverse=True):
            child.rmdir()
        self.path.rmdir()
        if self.cpu_path is not None:
            self.cpu_path.rmdir()


def make_cgroup(
    limit_mb: int, cpu_quota_us: int | None = None, uid: int | None = None
) -> LimitedCgroup | str:
    """The cgroup, or the reason it cannot be made here (for pytest.skip)."""
    if uid is not None and shutil.which("setpriv") is None:
        return "setpriv (util-linux) is needed to run the service as another uid"
    try:
        return LimitedCgroup(limit_mb, cpu_quota_us, uid)
    except (PermissionError, OSError) as exc:
        return f"no memory cgroup can be created here: {exc}"


@dataclass
class Mode:
    """How a test runs the service: in which container, as whom, with which data directory."""

    name: str
    group: LimitedCgroup
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def wrap(self) -> list[str]:
        return self.group.wrap()

    def close(self) -> None:
        self.group.remove()
        if self.group.uid is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def make_mode(name: str, base_dir: Path, limit_mb: int = 512) -> Mode | str:
    """``lab`` (root, worker cgroups) or ``render`` (uid 10001, no writable cgroup, 0.5 CPU)."""
    if name == "lab":
        group = make_cgroup(limit_mb)
        return group if isinstance(group, str) else Mode(name, group, base_dir)
    group = make_cgroup(limit_mb, RENDER_CPU_QUOTA_US, RENDER_UID)
    if isinstance(group, str):
        return group
    # pytest's tmp_path lives under a 0700 directory of root's: the service's uid could not reach it.
    data_dir = Path(tempfile.mkdtemp(prefix="memvisor-render-"))
    os.chown(data_dir, RENDER_UID, RENDER_UID)
    return Mode(name, group, data_dir, {"HOME": str(data_dir)})


__all__ = ["LimitedCgroup", "Mode", "make_cgroup", "make_mode"]
