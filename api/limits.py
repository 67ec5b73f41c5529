"""A cap on request bodies, enforced while they stream in rather than after they were buffered."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.uploads import UploadTooLargeError
from workers.units import MB


class BodyLimitMiddleware:
    """JSON bodies may be ``body_mb``; multipart uploads ``upload_mb`` (files plus form fields)."""

    def __init__(self, app: ASGIApp, body_mb: float, upload_mb: float) -> None:
        self.app = app
        self.body_bytes = int(body_mb * MB)
        self.upload_bytes = int(upload_mb * MB) + MB  # room for the form fields and boundaries

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.upload_bytes if multipart else self.body_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        await self.app(scope, _counting(receive, limit), send)


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise UploadTooLargeError(f"request body exceeds {limit // MB} MB")
        return message

    return wrapped


async def _refuse(send: Send, limit: int) -> None:
    body = f'{{"detail": "request body exceeds {limit // MB} MB"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
