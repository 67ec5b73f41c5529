"""What a worker may do. The supervisor decides (supervisor/privileges.py); this applies it.

Two moments, both before any code of a kind runs:

- :func:`at_fork`, in the freshly forked worker while it is still single-threaded (ZeroMQ has not
  started its I/O thread; ``unshare(CLONE_NEWUSER)`` refuses a threaded process, and no_new_privs
  and credentials are per thread): no_new_privs, no core dumps, no inherited descriptor, a fresh
  network namespace when this worker's kind needs no network, and, under a root service, the worker
  user's uid and gid with no capability left. Under an unprivileged service the namespace is made
  inside a new user namespace that maps the worker's own uid and gid (so it still appears as itself)
  and the capabilities it holds there are dropped at once.
- :func:`enter_task`, when the task arrives: the kind's secrets go into this process's environment
  (never the zygote's), TMPDIR and HOME become the task's directory, and Landlock fences the
  filesystem: code, models and system files read-only; the task's directory and the kind's stores
  writable; nothing else, the task database included. Landlock binds the calling thread and what it
  starts; ZeroMQ's I/O thread, started before the task's paths were known, is outside the fence.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workers import landlock
from workers.errors import SandboxError
from workers.lifeline import EXIT_NO_TASK, die_with_parent

PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
_CAP_VERSION_3 = 0x20080522
# Read-only for every worker: the interpreter, shared libraries, configuration, /proc and /sys.
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys")
DEVICES = "/dev"  # /dev/null, /dev/urandom, a tty: read, write and ioctl, never create


@dataclass(frozen=True)
class Policy:
    """Decided once by the supervisor and handed to the zygote on its command line."""

    uid: int | None = None  # drop to this uid/gid at fork (a root service)
    gid: int | None = None
    isolate_network: bool = False  # workers of kinds without network get a fresh namespace
    user_namespace: bool = False  # ... made inside a user namespace (an unprivileged service)
    landlock_abi: int = 0  # 0: no filesystem fence
    block_tcp: bool = False  # no namespace possible: Landlock refuses TCP instead (ABI >= 4)
    data_dir: str = ""  # never granted as code, though it may sit inside the checkout

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Policy:
        return cls(**json.loads(text)) if text else cls()


@dataclass
class _State:
    policy: Policy = field(default_factory=Policy)
    fork_network: bool = True  # whether the worker being forked keeps the service's network
    code: list[Path] = field(default_factory=list)  # found once in the zygote, after its imports


_state = _State()


def configure(policy: Policy) -> None:
    """In the zygote, once its imports are done: the policy every worker it forks applies. Where code
    lives is worked out here, once (about 100 ms of path resolution), not in every worker."""
    _state.policy = policy
    if policy.landlock_abi > 0:
        _state.code = code_paths(Path(policy.data_dir or "data"))


def set_fork_network(network: bool) -> None:
    """In the zygote's child, before :func:`at_fork`: the fork request says if its kind needs network."""
    _state.fork_network = network


# ---------------------------------------------------------------------------------------------------
# At fork: credentials and namespaces, while single-threaded.


def at_fork() -> None:
    """Harden the worker process; raises SandboxError (the worker then exits) rather than run bare."""
    policy = _state.policy
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SandboxError(f"PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash never writes task data to a core file
    os.closerange(3, 1 << 16)  # whatever the zygote held stays with it; ZeroMQ opens its own
    if policy.isolate_network and not _state.fork_network:
        _new_network_namespace(libc, policy.user_namespace)
    if policy.uid is not None and policy.gid is not None:
        _become(policy.uid, policy.gid)
    die_with_parent(EXIT_NO_TASK)  # a credential change cleared the parent-death signal: ask again


def _new_network_namespace(libc: ctypes.CDLL, user_namespace: bool) -> None:
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | (CLONE_NEWUSER if user_namespace else 0)
    if libc.unshare(flags) != 0:
        raise SandboxError(f"unshare(network namespace): {os.strerror(ctypes.get_errno())}")
    if flags & CLONE_NEWUSER:
        # The same ids inside as outside: files, the broker's socket and /proc see the same owner.
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1\n")
        Path("/proc/self/setgroups").write_text("deny\n")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1\n")
        _drop_capabilities(libc)


def _drop_capabilities(libc: ctypes.CDLL) -> None:
    """Drop what the new user namespace granted (single-threaded here, so for the whole process)."""
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable, twice (64 bits): all zero
    if libc.capset(header, data) != 0:
        raise SandboxError(f"capset: {os.strerror(ctypes.get_errno())}")


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # from root to another uid: every capability goes
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise SandboxError(f"could not become uid {uid} gid {gid}")


# ---------------------------------------------------------------------------------------------------
# At the task: secrets in, filesystem fenced.


def enter_task(task: dict[str, Any]) -> None:
    """Apply the task's part of the policy: called before the kind's module is even imported."""
    fence = task.get("sandbox") or {}
    os.environ.update({str(k): str(v) for k, v in (fence.get("secrets") or {}).items()})
    task_dir = Path(task["spool_dir"])
    if os.path.isdir(task_dir):  # False too where the worker user cannot reach DATA_DIR
        os.environ["TMPDIR"] = os.environ["HOME"] = str(task_dir)
    # A short private TMPDIR where the supervisor made one: Unix socket paths (Chromium's, say) must fit
    # in 108 bytes, which a spool directory under a long DATA_DIR may not leave room for.
    scratch = task.get("tmp_dir")
    if scratch and os.path.isdir(scratch):
        os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # gettempdir() caches; the zygote may have asked already
    abi = _state.policy.landlock_abi
    if abi <= 0:
        return
    writes = [task_dir, *(Path(p) for p in fence.get("writes") or [])]
    reads = [Path(p) for p in fence.get("reads") or []]
    code = _state.code or code_paths(Path(task["data_dir"]))
    rules = list(rules_for(code, reads, writes, abi))
    block_tcp = _state.policy.block_tcp and not fence.get("network", True)
    landlock.restrict_self(abi, rules, block_tcp=block_tcp)


def rules_for(
    code: Iterable[Path], reads: Iterable[Path], writes: Iterable[Path], abi: int
) -> Iterator[tuple[Path, int]]:
    """Landlock rules: code and system paths read-only, ``reads`` read-only, ``writes`` with every
    right, the devices read-write."""
    everything = landlock.fs_rights(abi)
    for path in code:
        yield path, landlock.READ
    for system in SYSTEM_READ:
        yield Path(system), landlock.READ
    yield Path(DEVICES), landlock.READ | landlock.WRITE_FILE | landlock.TRUNCATE | landlock.IOCTL_DEV
    for path in reads:
        yield path, landlock.READ
    for path in writes:
        yield path, everything


def code_paths(data_dir: Path) -> list[Path]:
    """Where this interpreter finds code: its prefixes, sys.path, the packages already imported.

    A root that holds the data directory (DATA_DIR defaults to ./data in the checkout, which is on
    sys.path) is granted child by child, around the data directory.
    """
    data = _resolved(data_dir)
    roots = {_resolved(Path(p)) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)}
    for entry in sys.path:
        path = Path(entry or os.getcwd())
        roots.add(_resolved(path.parent if path.is_file() else path))
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if "." not in name and location:
            roots.add(_resolved(Path(location).parent))
    granted: list[Path] = []
    for root in sorted(roots):
        granted += around(root, data)
    return outermost(granted)


def outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not beneath another one of them: one rule covers everything beneath it."""
    kept: list[Path] = []
    for path in sorted(set(paths)):
        if not kept or kept[-1] not in path.parents:
            kept.append(path)
    return kept


def around(root: Path, excluded: Path) -> list[Path]:
    """``root`` itself if ``excluded`` is not inside it (nor it inside ``excluded``); else the children
    of each directory on the way down to ``excluded``, except that way. Pure but for listing dirs."""
    if root == excluded or excluded in root.parents:
        return []
    if root not in excluded.parents:
        return [root]
    try:
        children = sorted(root.iterdir())
    except OSError:
        return []
    out: list[Path] = []
    for child in children:
        out += around(child, excluded)
    return out


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
