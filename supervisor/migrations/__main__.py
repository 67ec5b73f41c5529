"""``python -m supervisor.migrations``: bring the database of the settings (DATABASE_URL, or SQLite
under DATA_DIR) to the newest schema; exit 2 with one line naming it (password masked) if it cannot be
used. The service runs this in a child process before it binds its port, so that Alembic is never
loaded into the long-lived API process."""

from __future__ import annotations

import sys

from sqlalchemy.engine import make_url

from supervisor.config import SupervisorSettings
from supervisor.database import Database
from supervisor.errors import StoreUnavailableError


def main() -> int:
    url = SupervisorSettings().database()
    try:
        Database(url, pool_size=1).close()
    except StoreUnavailableError as exc:
        shown = make_url(url).render_as_string(hide_password=True)  # as the user wrote it
        print(f"memvisor: cannot use the database {shown}: {exc}; check DATABASE_URL", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
