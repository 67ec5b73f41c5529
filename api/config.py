"""The API's settings, read once from the environment."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    port: int = Field(default=8000, ge=1, le=65535)
    host: str = "0.0.0.0"
    admin_token: str | None = Field(default=None, description="admin routes exist only when set")
    max_wait_s: float = Field(default=60.0, gt=0, le=3600, description="longest GET ?wait_s=")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
