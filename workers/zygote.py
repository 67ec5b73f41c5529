"""Preloaded by the zygote (the forkserver) after the kind modules: the last thing it imports.

Everything imported here is shared copy-on-write by every worker. gc.freeze() moves these objects
out of the collector's generations so that a worker's first collection does not touch (and copy)
every page it inherited.
"""

from __future__ import annotations

import ctypes
import gc
import warnings

import msgpack  # noqa: F401
import pydantic  # noqa: F401
import zmq  # noqa: F401

from workers import protocol, registry, runtime  # noqa: F401

PR_SET_CHILD_SUBREAPER = 36

# Orphaned grandchildren are re-parented here (see below); the forkserver reaps them with its own
# waitpid(-1) loop and warns about each unknown pid, which is expected and not worth a line.
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
# A worker's children outlive it if it is killed: make the zygote, which reaps everything it is
# given, their new parent so that none of them is left a zombie under a PID 1 that does not reap.
ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)
gc.collect()
gc.freeze()
