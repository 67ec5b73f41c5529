"""The ASGI entry point: ``python -m uvicorn api.main:app`` (or ``python -m api``)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from pydantic import ValidationError

from api.app import create_app
from api.config import ApiSettings
from workers.errors import ConfigError

log = logging.getLogger("memvisor")


def _settings() -> ApiSettings:
    try:
        return ApiSettings()
    except ValidationError as exc:
        _refuse(exc)
        raise


def _refuse(exc: ValidationError | ConfigError) -> None:
    """A bad setting stops the service before it starts, with one line per problem and no traceback."""
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or exc.title
            print(f"memvisor: invalid setting {name}: {error['msg']}", file=sys.stderr)
    else:
        print(f"memvisor: invalid setting: {exc}", file=sys.stderr)
    sys.exit(2)


settings = _settings()
logging.basicConfig(
    level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
try:
    app = create_app(api_settings=settings)
except (ValidationError, ConfigError) as exc:
    _refuse(exc)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _check_database() -> None:
    """Migrate the database before the port is bound, in a child process (Alembic stays out of this
    one): a deploy with a wrong DATABASE_URL then fails with one line naming it (password masked)
    instead of serving. The URL travels in the environment, never on a command line."""
    import subprocess

    code = subprocess.run([sys.executable, "-m", "supervisor.migrations"], check=False).returncode
    if code != 0:
        sys.exit(code)


def _check_data_dir() -> None:
    """A second service on the same DATA_DIR is refused with one line, before it touches anything."""
    from memvisor.lock import DataDirInUseError, DataDirLock
    from supervisor.config import SupervisorSettings

    try:
        DataDirLock(SupervisorSettings().data_dir).check()
    except DataDirInUseError as exc:
        print(f"memvisor: {exc}", file=sys.stderr)
        sys.exit(2)


def serve() -> None:
    import uvicorn

    _check_data_dir()
    _check_database()
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
