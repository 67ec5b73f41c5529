"""Every refusal becomes a clear 4xx (or 503) with a JSON body; nothing we raise on purpose is a 500.

The mapping travels with the routes (``MemvisorRoute``) rather than being installed on an app, so the
routers answer the same way inside any app that mounts them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from api.uploads import UploadError
from supervisor.errors import (
    AdmissionRefusedError,
    DrainingError,
    InvalidRequestError,
    KindDisabledError,
    NotCancellableError,
    QueueFullError,
    StoreUnavailableError,
    SupervisorError,
    TaskNotFoundError,
    UnknownKindError,
)
from workers.errors import MemvisorError

STORE_RETRY_AFTER_S = 5


def _body(status: int, detail: Any, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def _unknown_kind(exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownKindError)
    return _body(422, str(exc), known_kinds=exc.known)


def _disabled(exc: Exception) -> JSONResponse:
    assert isinstance(exc, KindDisabledError)
    return _body(503, str(exc), switch=exc.switch)


def _payload(exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    errors = [{"loc": ["payload", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return _body(422, errors)


def _invalid(exc: Exception) -> JSONResponse:
    return _body(422, str(exc))


def _too_big(exc: Exception) -> JSONResponse:
    assert isinstance(exc, AdmissionRefusedError)
    return _body(
        422, str(exc), reason=exc.reason, needed_mb=round(exc.needed_mb), budget_mb=round(exc.budget_mb)
    )


def _queue_full(exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    return _body(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


def _draining(exc: Exception) -> JSONResponse:
    return _body(503, str(exc), headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def _not_found(exc: Exception) -> JSONResponse:
    return _body(404, str(exc))


def _conflict(exc: Exception) -> JSONResponse:
    return _body(409, str(exc))


def _upload(exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadError)
    return _body(exc.status, str(exc))


def _store(exc: Exception) -> JSONResponse:
    return _body(503, str(exc), headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def _not_started(exc: Exception) -> JSONResponse:
    return _body(503, str(exc), headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


class NotStartedError(SupervisorError):
    """A route was called while the supervisor is not running (outside the lifespan)."""


Handler = Callable[[Exception], JSONResponse]
HANDLERS: dict[type[Exception], Handler] = {
    UnknownKindError: _unknown_kind,
    KindDisabledError: _disabled,
    ValidationError: _payload,
    InvalidRequestError: _invalid,
    AdmissionRefusedError: _too_big,
    QueueFullError: _queue_full,
    DrainingError: _draining,
    TaskNotFoundError: _not_found,
    NotCancellableError: _conflict,
    StoreUnavailableError: _store,
    UploadError: _upload,
    NotStartedError: _not_started,
}


def response_for(exc: Exception) -> JSONResponse | None:
    """The refusal ``exc`` stands for, or None for anything else (a real bug stays a 500)."""
    if not isinstance(exc, MemvisorError | ValidationError):
        return None
    for exc_type in type(exc).__mro__:  # the most specific handler wins
        handler = HANDLERS.get(exc_type)
        if handler is not None:
            return handler(exc)
    return None


class MemvisorRoute(APIRoute):
    """A route that answers memvisor's refusals itself, whatever app it is mounted in."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer_refusals(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = response_for(exc)
                if response is None:
                    raise
                return response

        return answer_refusals
