"""Messages between the supervisor's ROUTER and a worker's DEALER.

Every frame is one msgpack map with a ``type`` field; nothing is ever unpickled. The worker's ZeroMQ
routing id is ``<task_id>:<attempt>`` so that a retried task never collides with a dead predecessor;
a spare, forked before its task is known, keeps ``spare-<uuid>:0`` for its whole life.

    worker -> supervisor: ready {pid} | progress {data} | result {result} | error {error: {type, message}}
    supervisor -> worker: task {task_id, kind, payload, data_dir, spool_dir, output_dir} | ack
"""

from __future__ import annotations

from typing import Any

import msgpack

from workers.errors import ProtocolError

READY = "ready"
PROGRESS = "progress"
RESULT = "result"
ERROR = "error"
TASK = "task"
ACK = "ack"

WORKER_TYPES = frozenset({READY, PROGRESS, RESULT, ERROR})
SUPERVISOR_TYPES = frozenset({TASK, ACK})

# A frame larger than this is refused before decoding: results travel inline, files travel by path.
MAX_FRAME_BYTES = 16 * 1024 * 1024


def encode(msg_type: str, **fields: Any) -> bytes:
    frame: bytes = msgpack.packb({"type": msg_type, **fields}, use_bin_type=True)
    return frame


def decode(frame: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """Decode one frame, refusing anything that is not a map of an allowed type."""
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if not isinstance(msg, dict) or msg.get("type") not in allowed:
        raise ProtocolError("frame is not a protocol message")
    return msg


def routing_id(task_id: str, attempt: int) -> bytes:
    return f"{task_id}:{attempt}".encode()
