"""What workers may do: the supervisor's side of least privilege (workers/sandbox.py applies it).

Decided once at startup from the settings, the kinds' declarations and what the kernel offers:

- the zygote's environment: an allow-list, never a secret of the service (:func:`worker_environment`);
  a kind's declared secrets travel with its TASK frame only (:meth:`Privileges.task_fields`);
- a root service's workers run as ``WORKER_USER``; the task database and the service's files stay
  out of their reach, their task's directory and their kind's stores are given to them;
- Landlock where the kernel has it; a fresh network namespace for kinds that need no network where
  the service may make one (:func:`network_mode`).
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.privileges_config import DEFAULT_WORKER_USER, PrivilegeSettings
from workers import landlock
from workers.catalog import Catalog
from workers.errors import ConfigError
from workers.registry import PathsFn
from workers.sandbox import CLONE_NEWNET, CLONE_NEWUSER, Policy

log = logging.getLogger(__name__)

# Never handed to the zygote, whatever WORKER_ENV says: the service's own credentials.
SERVICE_SECRETS = frozenset(
    {"ADMIN_TOKEN", "API_KEYS", "SUPABASE_JWT_SECRET", "SUPABASE_JWKS", "DATABASE_URL", "LLM_API_KEY"}
)
# What workers need to run (locale, interpreter, thread pools, allocator), the non-secret settings the
# built-in kinds read, network settings for kinds that use the network, and the test run's marker.
ALLOWED_ENV = frozenset(
    {
        "PATH", "LANG", "LANGUAGE", "TZ", "HOME", "TERM", "TMPDIR", "VIRTUAL_ENV",
        "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
        "PYTHONIOENCODING", "PYTHONWARNINGS", "PYTHONFAULTHANDLER", "PYTHONUTF8", "PYTHONNOUSERSITE",
        "MALLOC_ARENA_MAX", "MALLOC_TRIM_THRESHOLD_", "DATA_DIR", "LOG_LEVEL", "MEMVISOR_TEST_RUN",
        "LLM_BASE_URL", "LLM_MODEL", "LLM_TIMEOUT_S", "LLM_MAX_TOKENS", "CHROMA_URL", "ROLE",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_", "OMP_", "OPENBLAS_", "MKL_", "ORT_", "KMP_", "OCR_", "BROWSER_")
SETTINGS_PREFIX = "MEMVISOR_"  # every setting may also be given so (workers/settings.py)
NOBODY = 65534
PR_SET_DUMPABLE = 4
_PROBE = "import ctypes, sys; sys.exit(ctypes.CDLL(None, use_errno=True).unshare(int(sys.argv[1])) != 0)"
PROBE_TIMEOUT_S = 10.0


def worker_environment(
    environ: Mapping[str, str], extra: Iterable[str] = (), secrets: Iterable[str] = ()
) -> dict[str, str]:
    """The zygote's environment: allowed names only, and never a secret."""
    denied = SERVICE_SECRETS | set(secrets)
    wanted = ALLOWED_ENV | set(extra)

    def allowed(name: str) -> bool:
        base = name.removeprefix(SETTINGS_PREFIX) if name != "MEMVISOR_TEST_RUN" else name
        return base not in denied and (base in wanted or base.startswith(ALLOWED_PREFIXES))

    return {name: value for name, value in environ.items() if allowed(name)}


def network_mode(enabled: bool, root: bool, may_unshare: bool, landlock_abi: int) -> tuple[str, str]:
    """How workers of kinds without network lose it: ``namespace``, ``landlock-tcp`` or ``off``; and
    why (what makes it so)."""
    if not enabled:
        return "off", "WORKER_NETWORK_ISOLATION=false"
    if may_unshare:
        how = "as root" if root else "inside a user namespace"
        return "namespace", f"a fresh network namespace ({how})"
    cannot = "root without CAP_SYS_ADMIN" if root else "user namespaces are not allowed here"
    if landlock_abi >= 4:
        return "landlock-tcp", f"TCP connect/bind refused by Landlock ({cannot}; UDP and others stay open)"
    return "off", f"{cannot}, and Landlock < ABI 4 cannot refuse TCP"


@dataclass(frozen=True)
class WorkerUser:
    name: str
    uid: int
    gid: int
    note: str = ""  # why this user and not the one asked for


def resolve_worker_user(spec: str) -> WorkerUser:
    """``WORKER_USER`` as a name, ``uid`` or ``uid:gid``. The default user missing falls back to
    nobody (65534) with a note; a user named explicitly must exist."""
    if spec.replace(":", "").isdigit():
        uid_text, _, gid_text = spec.partition(":")
        uid = int(uid_text)
        gid = int(gid_text) if gid_text else _primary_gid(uid)
        return WorkerUser(spec, uid, gid)
    try:
        entry = pwd.getpwnam(spec)
    except KeyError:
        if spec != DEFAULT_WORKER_USER:
            raise ConfigError(
                f"WORKER_USER={spec}: no such user; create it (useradd --system {spec}) or name another"
            ) from None
        note = f"user {spec} does not exist (useradd --system {spec}); using nobody ({NOBODY})"
        return WorkerUser("nobody", NOBODY, _group_or(NOBODY), note)
    if entry.pw_uid == 0:
        raise ConfigError(f"WORKER_USER={spec} is root: workers parse untrusted input")
    return WorkerUser(spec, entry.pw_uid, entry.pw_gid)


def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


def _group_or(gid: int) -> int:
    for name in ("nogroup", "nobody"):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return gid


def searchable_by(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that ``uid``/``gid`` cannot pass through, or None."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            return directory
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def may_unshare(flags: int) -> bool:
    """Try, in a fresh single-threaded interpreter, what a worker will do at fork."""
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-c", _PROBE, str(flags)], timeout=PROBE_TIMEOUT_S, env={}, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


class Privileges:
    """The policy, and the steps of the supervisor that carry it out."""

    def __init__(self, settings: PrivilegeSettings, catalog: Catalog, data_dir: Path) -> None:
        self.settings = settings
        self.catalog = catalog
        self.data_dir = data_dir.absolute()
        self.root = os.geteuid() == 0
        self.user = resolve_worker_user(settings.worker_user) if self.root else None
        # A worker user that cannot reach the code could not even import the kind: workers then keep
        # the service's uid (with every other protection) and the boot line says why and how to fix it.
        self.user_off = _code_unreachable(self.user) if self.user is not None else None
        if self.user_off is not None:
            log.warning("workers keep uid %d: %s", os.geteuid(), self.user_off)
            self.user = None
        self.landlock_abi, self.landlock_off = (
            landlock.abi_version() if settings.worker_landlock else (0, "WORKER_LANDLOCK=false")
        )
        flags = CLONE_NEWNET if self.root else CLONE_NEWNET | CLONE_NEWUSER
        unshare_ok = settings.worker_network_isolation and may_unshare(flags)
        self.network_mode, self.network_detail = network_mode(
            settings.worker_network_isolation, self.root, unshare_ok, self.landlock_abi
        )
        self.policy = Policy(
            uid=self.user.uid if self.user else None,
            gid=self.user.gid if self.user else None,
            isolate_network=self.network_mode == "namespace",
            user_namespace=self.network_mode == "namespace" and not self.root,
            landlock_abi=self.landlock_abi,
            block_tcp=self.network_mode == "landlock-tcp",
            data_dir=str(self.data_dir),
        )
        kinds = catalog.kinds
        self.network = {name: spec.needs_network() for name, spec in kinds.items()}
        self.stores = {name: [self.data_dir / s for s in spec.stores] for name, spec in kinds.items()}
        self.reads = {name: _reads(spec.reads, self.data_dir) for name, spec in kinds.items()}
        self.secrets = {name: spec.secrets for name, spec in kinds.items() if spec.secrets}
        self.unreachable: Path | None = None
        secret_names = {n for names in self.secrets.values() for n in names}
        leaked = sorted(secret_names & set(settings.extra_env()))
        if leaked:
            names = ", ".join(leaked)
            raise ConfigError(f"WORKER_ENV: {names} is a kind's secret and travels with its tasks only")

    # ----- what workers receive --------------------------------------------------------------

    def zygote_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        secret_names = {n for names in self.secrets.values() for n in names}
        source = os.environ if environ is None else environ
        return worker_environment(source, self.settings.extra_env(), secret_names)

    def needs_network(self, kind: str) -> bool:
        return self.network.get(kind, True)

    def spare_fits(self, kind: str) -> bool:
        """Spares are forked without network (most kinds need none) where namespaces are in use."""
        return not self.policy.isolate_network or not self.needs_network(kind)

    def task_fields(self, kind: str, task_dir: Path, output_dir: Path, scratch_dir: Path) -> dict[str, Any]:
        """The TASK frame's ``sandbox`` field; the task's directories are made the worker's first."""
        for directory in (task_dir, output_dir, scratch_dir):
            self._give(directory, recursive=True)
        secrets = {name: os.environ[name] for name in self.secrets.get(kind, ()) if name in os.environ}
        return {
            "sandbox": {
                "secrets": secrets,
                "network": self.needs_network(kind),
                "writes": [str(p) for p in [output_dir, scratch_dir, *self.stores.get(kind, [])]],
                "reads": self.reads.get(kind, []),
            }
        }

    # ----- the service's files ---------------------------------------------------------------

    def prepare(self, runtime_dir: Path, spool_dir: Path, database_url: str) -> None:
        """Before the first worker: the service's files private, the workers' ones theirs."""
        _not_dumpable()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        spool_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.data_dir, spool_dir):  # others may pass through, never list
            _chmod_if_ours(directory, 0o711)
        database = _sqlite_file(database_url)
        for suffix in ("", "-wal", "-shm", "-journal"):
            if database is not None:
                _chmod_if_ours(Path(f"{database}{suffix}"), 0o600)
        for kind, stores in self.stores.items():
            if kind not in self.catalog.disabled:
                for store in stores:
                    store.mkdir(parents=True, exist_ok=True)
                    self._give(store, recursive=True)
        if self.user is not None:
            # Workers connect to the broker after they dropped root: its group is theirs.
            os.chown(runtime_dir, -1, self.user.gid)
            os.chmod(runtime_dir, 0o710)
            socket_path = runtime_dir / "broker.sock"
            os.chown(socket_path, -1, self.user.gid)
            os.chmod(socket_path, 0o660)
            blocked = searchable_by(runtime_dir.parent, self.user.uid, self.user.gid)
            if blocked is not None:  # no worker could ever connect: say so now, not at each task
                log.error("the worker user cannot reach RUNTIME_DIR %s through %s", runtime_dir, blocked)
            self.unreachable = searchable_by(spool_dir, self.user.uid, self.user.gid)

    def _give(self, directory: Path, recursive: bool) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if self.user is None:
            return
        paths = [directory]
        if recursive:
            for parent, dirs, files in os.walk(directory):
                paths += [Path(parent, name) for name in [*dirs, *files]]
        for path in paths:
            os.chown(path, self.user.uid, self.user.gid, follow_symlinks=False)

    # ----- what is on ------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Each protection: on or off, and what it is or why it is off."""
        if self.user is not None:
            detail = f"uid {self.user.uid} gid {self.user.gid} ({self.user.name})"
            user = {"on": True, "detail": detail + (f"; {self.user.note}" if self.user.note else "")}
        else:
            shared = f"the service runs as uid {os.geteuid()}, not root: workers share its uid"
            detail = self.user_off or shared
            user = {"on": False, "detail": detail}
        secrets = ", ".join(f"{k}: {'/'.join(v)}" for k, v in sorted(self.secrets.items())) or "none"
        landlock_detail = f"Landlock ABI {self.landlock_abi}" if self.landlock_abi else self.landlock_off
        with_network = sorted(k for k, on in self.network.items() if on)
        report: dict[str, Any] = {
            "worker_user": user,
            "no_new_privs": {"on": True, "detail": "every worker"},
            "core_dumps_off": {"on": True, "detail": "RLIMIT_CORE=0 in every worker"},
            "secrets_filtered": {"on": True, "detail": f"allow-listed environment; per kind: {secrets}"},
            "filesystem": {"on": self.landlock_abi > 0, "detail": landlock_detail},
            "network": {
                "on": self.network_mode != "off",
                "detail": self.network_detail,
                "kinds_with_network": with_network,
            },
        }
        if self.unreachable is not None:
            report["data_dir_reachable"] = {
                "on": False,
                "detail": f"{self.unreachable} is not searchable by the worker user: tasks that read "
                "uploads or write a store will fail; make it o+x or move DATA_DIR",
            }
        return report

    def boot_line(self) -> str:
        report = self.report()
        on = [f"{name} ({item['detail']})" for name, item in report.items() if item["on"]]
        off = [f"{name} ({item['detail']})" for name, item in report.items() if not item["on"]]
        return f"worker protections on: {'; '.join(on)} | off: {'; '.join(off) or 'none'}"


def _code_unreachable(user: WorkerUser) -> str | None:
    """Workers import lazily: the worker user must reach the interpreter's prefix and the code.
    Returns why it cannot (with the fix), or None."""
    import workers

    for code in (Path(sys.prefix), Path.cwd(), Path(workers.__file__).parent):
        blocked = searchable_by(code.resolve(), user.uid, user.gid)
        if blocked is not None:
            return (
                f"the worker user {user.name} (uid {user.uid}) cannot pass through {blocked} to reach "
                f"{code}: make it searchable (chmod o+x {blocked}) or move the installation"
            )
    return None


def _reads(reads: PathsFn | None, data_dir: Path) -> list[str]:
    return [str(path) for path in reads(data_dir)] if reads is not None else []


def _not_dumpable() -> None:
    """This process's memory and /proc environ stay out of reach of a worker sharing its uid."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _chmod_if_ours(path: Path, mode: int) -> None:
    try:
        if path.stat().st_uid == os.geteuid():
            os.chmod(path, mode)
    except FileNotFoundError:
        pass


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite:///"
    if not url.startswith(prefix) or ":memory:" in url:
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])
