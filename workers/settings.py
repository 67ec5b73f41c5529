"""The one base of every settings class: each setting is read as ``MEMVISOR_<NAME>`` first, then ``<NAME>``.

memvisor often lives inside someone else's app, whose environment already has its own ``DATABASE_URL``,
``PORT`` or ``LOG_LEVEL``: the prefixed name lets the two be told apart, and it wins where both are set.
Precedence, highest first: values passed in code, ``MEMVISOR_<NAME>``, ``<NAME>``, defaults.
"""

from __future__ import annotations

import os

from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

PREFIX = "MEMVISOR_"


class Settings(BaseSettings):
    """Subclass this instead of ``BaseSettings``; a class's own ``env_prefix`` (e.g. ``LLM_``) is kept
    after the common one (``MEMVISOR_LLM_MODEL``, then ``LLM_MODEL``)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        own_prefix = settings_cls.model_config.get("env_prefix") or ""
        prefixed = EnvSettingsSource(settings_cls, env_prefix=PREFIX + own_prefix)
        return init_settings, prefixed, env_settings, dotenv_settings, file_secret_settings


def env(name: str, default: str | None = None) -> str | None:
    """One variable read the same way, for the few read outside a settings class."""
    return os.environ.get(PREFIX + name) or os.environ.get(name) or default
