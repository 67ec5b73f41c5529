"""The supervisor's end of the wire: one ZeroMQ ROUTER on an ipc:// socket in a private directory.

Frames from workers are msgpack maps checked against the protocol before anything reads them; a
garbage or oversized frame is logged and dropped, never unpickled and never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from workers import protocol
from workers.errors import ProtocolError

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, dict[str, Any]], None]


class Broker:
    def __init__(self, on_message: MessageHandler, runtime_dir: Path | None = None) -> None:
        self._on_message = on_message
        self._own_dir = runtime_dir is None
        self.runtime_dir = runtime_dir or Path(tempfile.mkdtemp(prefix="memvisor-"))
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def endpoint(self) -> str:
        return f"ipc://{self.runtime_dir / 'broker.sock'}"

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.runtime_dir, 0o700)  # only our own user may talk to the workers' socket
        self._ctx = zmq.asyncio.Context(io_threads=1)
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a vanished worker fails loudly
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_FRAME_BYTES)
        sock.bind(self.endpoint)
        os.chmod(self.runtime_dir / "broker.sock", 0o600)
        self._sock = sock
        self._reader = asyncio.create_task(self._read_loop(), name="broker-reader")

    async def send(self, routing_id: bytes, frame: bytes) -> bool:
        """Send to one worker; False if it is no longer connected."""
        assert self._sock is not None
        try:
            await self._sock.send_multipart([routing_id, frame], flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("send to %s failed: %s", routing_id.decode(errors="replace"), exc)
            return False
        return True

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart()
            if len(frames) != 2:
                log.warning("dropped a message of %d frames", len(frames))
                continue
            try:
                msg = protocol.decode(frames[1], protocol.WORKER_TYPES)
            except ProtocolError as exc:
                log.warning("dropped a frame from %r: %s", frames[0][:64], exc)
                continue
            try:
                self._on_message(frames[0], msg)
            except Exception:  # one bad message must not stop the reader for every other worker
                log.exception("handling a message from %r failed", frames[0][:64])

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._sock is not None:
            self._sock.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        if self._own_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
