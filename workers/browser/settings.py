"""The browser kind's settings, read from the environment when a task or the startup check asks."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.browser.guard import AllowList, parse_allowed


class BrowserSettings(BaseSettings):
    """``BROWSER_ALLOWED_HOSTS``: host names and CIDRs a page may reach besides public addresses."""

    model_config = SettingsConfigDict(extra="ignore")

    browser_allowed_hosts: str = ""
    browser_executable: Path = Path("/usr/bin/chromium")

    @field_validator("browser_allowed_hosts")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_allowed(value)
        return value

    def allow_list(self) -> AllowList:
        return parse_allowed(self.browser_allowed_hosts)


def check() -> None:
    """At startup: the settings parse (a ValueError stops the service with its message). A missing
    browser is not checked here, so a service without Chromium still starts: its tasks say so."""
    BrowserSettings()
