"""Settings that decide which task kinds exist in this service."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUILTIN_MODULES = {
    "workers.ocr": "DISABLE_OCR",
    "workers.rag": "DISABLE_RAG",
    "workers.agent": "DISABLE_AGENTS",
    "workers.browser": "DISABLE_BROWSER",
}
DIAGNOSTIC_MODULE = "workers.diagnostic"


class KindSettings(BaseSettings):
    """``TASK_MODULES`` is a comma-separated list of importable modules that register user kinds."""

    model_config = SettingsConfigDict(extra="ignore")

    enable_diagnostic_tasks: bool = False
    disable_ocr: bool = False
    disable_rag: bool = False
    disable_agents: bool = False
    disable_browser: bool = False
    task_modules: str = ""

    @field_validator("task_modules")
    @classmethod
    def _module_names(cls, value: str) -> str:
        for name in _split(value):
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"TASK_MODULES: {name!r} is not a module name")
        return value

    def user_modules(self) -> list[str]:
        return _split(self.task_modules)

    def disabled_switches(self) -> set[str]:
        flags = {
            "DISABLE_OCR": self.disable_ocr,
            "DISABLE_RAG": self.disable_rag,
            "DISABLE_AGENTS": self.disable_agents,
            "DISABLE_BROWSER": self.disable_browser,
        }
        return {switch for switch, on in flags.items() if on}


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
