"""A real memory cgroup for a test: the way to run the service as a 512 MB Render instance would."""

from __future__ import annotations

import os
import uuid

from supervisor.memory import MB, own_cgroup


class LimitedCgroup:
    """A child of our own v1 memory cgroup with a hard limit; ``wrap`` runs a command inside it."""

    def __init__(self, limit_mb: int) -> None:
        parent = own_cgroup()
        if os.geteuid() != 0 or parent is None or parent.version != 1:
            raise PermissionError("needs root and a cgroup v1 memory hierarchy")
        self.path = parent.path / f"memvisor-test-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(limit_mb * MB))
        self.limit_mb = limit_mb

    def wrap(self) -> list[str]:
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$0" "$@"']

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


def make_cgroup(limit_mb: int) -> LimitedCgroup | str:
    """The cgroup, or the reason it cannot be made here (for pytest.skip)."""
    try:
        return LimitedCgroup(limit_mb)
    except (PermissionError, OSError) as exc:
        return f"no memory cgroup can be created here: {exc}"


__all__ = ["LimitedCgroup", "make_cgroup"]
