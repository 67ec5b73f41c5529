"""Landlock (Linux >= 5.13, no privilege needed) through its three system calls, with ctypes.

A ruleset lists what is *handled* (every access right the running kernel knows) and which paths
beneath which each right is granted; once a thread restricts itself, anything handled and not granted
is refused (EACCES), for it and for every thread and process it starts later. With ABI 4 the same
ruleset can refuse TCP connect/bind, and with ABI 6 signals and abstract Unix sockets leaving the
domain. Nothing here decides *what* to grant: see :mod:`workers.sandbox`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterable
from pathlib import Path

from workers.errors import SandboxError

# System call numbers are the same on x86_64 and aarch64 (and every architecture since 5.13).
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

# Filesystem rights, by the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
_FS_BY_ABI = {1: (1 << 13) - 1, 2: REFER, 3: TRUNCATE, 5: IOCTL_DEV}


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is packed: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def abi_version() -> tuple[int, str]:
    """The kernel's Landlock ABI (0 when unavailable) and, when 0, why."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return 0, f"no Landlock system call numbers known for {platform.machine()}"
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), ctypes.c_uint32(CREATE_RULESET_VERSION))
    if version < 0:
        err = ctypes.get_errno()
        why = {errno.ENOSYS: "not built into this kernel", errno.EOPNOTSUPP: "disabled at boot"}
        return 0, f"Landlock is {why.get(err, os.strerror(err))}"
    return int(version), ""


def fs_rights(abi: int) -> int:
    """Every filesystem right the given ABI handles."""
    return sum(bits for since, bits in _FS_BY_ABI.items() if abi >= since)


def restrict_self(
    abi: int, rules: Iterable[tuple[Path, int]], *, block_tcp: bool = False, scope: bool = True
) -> list[str]:
    """Restrict the calling thread (and what it starts) to ``rules``: (path, rights) pairs.

    Paths that do not exist or cannot be opened are skipped and returned. Needs no_new_privs.
    """
    sys_create, sys_add, sys_restrict = _SYSCALLS[platform.machine()]
    libc = _libc()
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = (NET_BIND_TCP | NET_CONNECT_TCP) if block_tcp else 0
        size = 16
    if abi >= 6:
        attr.scoped = (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if scope else 0
        size = 24
    ruleset = libc.syscall(sys_create, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise SandboxError(f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    skipped: list[str] = []
    try:
        for path, rights in rules:
            if not _add_rule(libc, sys_add, int(ruleset), path, rights & handled):
                skipped.append(str(path))
        if libc.syscall(sys_restrict, ctypes.c_int(ruleset), ctypes.c_uint32(0)) < 0:
            raise SandboxError(f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return skipped


def _add_rule(libc: ctypes.CDLL, sys_add: int, ruleset: int, path: Path, rights: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not os.path.isdir(path):
            rights &= EXECUTE | READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV  # rights a file can take
        beneath = _PathBeneathAttr(rights, fd)
        kind = ctypes.c_int(RULE_PATH_BENEATH)
        if libc.syscall(sys_add, ctypes.c_int(ruleset), kind, ctypes.byref(beneath), ctypes.c_uint32(0)):
            raise SandboxError(f"landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return True
