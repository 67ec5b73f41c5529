"""The ASGI entry point: ``python -m uvicorn api.main:app`` (or ``python -m api``)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from api.app import create_app
from api.config import ApiSettings

settings = ApiSettings()
logging.basicConfig(
    level=settings.log_level.upper(),
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
)
app = create_app(api_settings=settings)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve() -> None:
    import uvicorn

    # uvicorn drains on SIGTERM, then re-raises the signal at the previous handler: make that a
    # clean exit, since a completed drain is a success (Render logs a signal death as a crash).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # One process: several uvicorn workers would each run a supervisor against one memory budget.
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
