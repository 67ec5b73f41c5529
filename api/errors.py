"""Every refusal becomes a clear 4xx (or 503) with a JSON body; nothing we raise on purpose is a 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
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
    TaskNotFoundError,
    UnknownKindError,
)

STORE_RETRY_AFTER_S = 5


def _body(status: int, detail: Any, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


async def _unknown_kind(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownKindError)
    return _body(422, str(exc), known_kinds=exc.known)


async def _disabled(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, KindDisabledError)
    return _body(503, str(exc), switch=exc.switch)


async def _payload(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    errors = [{"loc": ["payload", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return _body(422, errors)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    return _body(422, str(exc))


async def _too_big(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AdmissionRefusedError)
    return _body(
        422, str(exc), reason=exc.reason, needed_mb=round(exc.needed_mb), budget_mb=round(exc.budget_mb)
    )


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    return _body(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)})


async def _draining(_: Request, exc: Exception) -> JSONResponse:
    return _body(503, str(exc), headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return _body(404, str(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return _body(409, str(exc))


async def _upload(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UploadError)
    return _body(exc.status, str(exc))


async def _store(_: Request, exc: Exception) -> JSONResponse:
    return _body(503, str(exc), headers={"Retry-After": str(STORE_RETRY_AFTER_S)})


def install(app: FastAPI) -> None:
    handlers = {
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
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)
