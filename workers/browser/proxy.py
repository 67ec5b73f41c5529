"""The guard in the network path: a small HTTP proxy inside the worker that Chromium must use for
every connection (``--proxy-server``, loopback included).

Playwright's request routing does not see redirects (measured: a 302 to a private address was
followed, for navigations and subresources alike, without the route handler being called), so the
check lives where every connection passes: each ``CONNECT host:port`` (HTTPS, WebSockets) and each
plain-HTTP request (``GET http://host/...``) is resolved here, refused unless every address passes
``guard.refusal``, and connected to an address that was checked, so a DNS answer that changes between
the check and the connection cannot slip through. Redirect hops are new requests, so each is checked.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from workers.browser.guard import AllowList, refusal

log = logging.getLogger(__name__)

HEAD_LIMIT_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 15.0
BUFFER_BYTES = 64 * 1024
BLOCKED_HEADER = "x-memvisor-blocked"
REFUSAL = b" 403 Forbidden\r\nx-memvisor-blocked: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
HOP_HEADERS = (b"proxy-connection", b"connection", b"keep-alive", b"proxy-authorization")

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the browser could use any of them)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedProxy:
    """Listens on 127.0.0.1; one thread per connection, all of them daemons of the worker."""

    def __init__(self, allow: AllowList, resolver: Resolver = resolve) -> None:
        self.allow = allow
        self.resolver = resolver
        self.refused: list[str] = []  # "host:port: why" of every connection refused by the guard
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="browser-proxy", daemon=True)

    def __enter__(self) -> GuardedProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head, rest = _read_head(client)
            if head is None:
                return
            method, target, version, headers = _parse_head(head)
            tunnel = method == b"CONNECT"
            host, port, path = _destination(target, tunnel)
            upstream = self._connect(host, port) if host else None
            if upstream is None:
                client.sendall(version + REFUSAL)
                return
            with upstream:
                if tunnel:
                    client.sendall(version + b" 200 Connection Established\r\n\r\n")
                else:
                    upstream.sendall(_origin_request(method, path, version, headers) + rest)
                _pipe(client, upstream)

    def _connect(self, host: str, port: int) -> socket.socket | None:
        try:
            addresses = self.resolver(host, port)
        except OSError as exc:
            log.info("%s:%d does not resolve: %s", host, port, exc)  # a failure, not a refusal
            return None
        why = refusal(host, addresses, self.allow)
        if why is not None:
            self._refuse(host, port, why)
            return None
        for address in addresses:
            with contextlib.suppress(OSError):
                return socket.create_connection((address, port), timeout=CONNECT_TIMEOUT_S)
        return None

    def _refuse(self, host: str, port: int, why: str) -> None:
        log.info("blocked %s:%d: %s", host, port, why)
        self.refused.append(f"{host}:{port}: {why}")


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT_BYTES:
            return None, b""
        chunk = sock.recv(BUFFER_BYTES)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _parse_head(head: bytes) -> tuple[bytes, bytes, bytes, list[bytes]]:
    request_line, *headers = head.split(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return b"", b"", b"HTTP/1.1", []
    return parts[0], parts[1], parts[2], headers


def _destination(target: bytes, tunnel: bool) -> tuple[str, int, str]:
    """(host, port, path) of a CONNECT authority or an absolute-form URL; host "" if unusable."""
    text = target.decode("latin-1")
    try:
        if tunnel:
            parts = urlsplit("//" + text)
            return parts.hostname or "", parts.port or 443, ""
        parts = urlsplit(text)
        if parts.scheme != "http":
            return "", 0, ""
        path = parts.path or "/"
        return parts.hostname or "", parts.port or 80, path + (f"?{parts.query}" if parts.query else "")
    except ValueError:
        return "", 0, ""


def _origin_request(method: bytes, path: str, version: bytes, headers: list[bytes]) -> bytes:
    """The request as the origin server expects it, on a connection used for this request only."""
    kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
    lines = [method + b" " + path.encode("latin-1") + b" " + version, *kept, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes, then close both: a plain-HTTP connection carries one
    request (a second one must come back through the check on a new connection)."""

    def copy(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(BUFFER_BYTES):
                dst.sendall(chunk)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join()
