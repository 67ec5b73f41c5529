"""Settings of the workers' protections (see supervisor/privileges.py and the README's security model)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from workers.settings import Settings

DEFAULT_WORKER_USER = "memvisor-worker"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PrivilegeSettings(Settings):
    """Env var = field name in upper case (or with the MEMVISOR_ prefix)."""

    model_config = SettingsConfigDict(extra="ignore")

    worker_user: str = Field(
        default=DEFAULT_WORKER_USER,
        description="user (name, uid or uid:gid) workers of a root service run as; never root",
    )
    worker_network_isolation: bool = Field(
        default=True, description="kinds that need no network run in a fresh network namespace"
    )
    worker_landlock: bool = Field(default=True, description="fence workers' filesystem with Landlock")
    worker_env: str = Field(
        default="", description="comma-separated extra environment variables workers receive"
    )

    @field_validator("worker_user")
    @classmethod
    def _user(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("WORKER_USER must name a user")
        if value in {"root", "0"} or value.startswith("0:"):
            raise ValueError("WORKER_USER must not be root: workers parse untrusted input")
        return value

    @field_validator("worker_env")
    @classmethod
    def _names(cls, value: str) -> str:
        for name in split_names(value):
            if not _ENV_NAME.match(name):
                raise ValueError(f"WORKER_ENV: {name!r} is not an environment variable name")
        return value

    def extra_env(self) -> list[str]:
        return split_names(self.worker_env)


def split_names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
