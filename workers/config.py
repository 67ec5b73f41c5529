"""Settings that decide which task kinds exist in this service, and where the RAG kinds keep vectors.

- ``CHROMA_URL`` (unset): a Chroma server (``chroma run``) shared by every instance, e.g.
  ``http://chroma:8000``. A bare ``host:port``, as Render's ``fromService … property: hostport``
  gives it, means ``http://host:port``. Unset: a local store under ``DATA_DIR/chroma``, for a single
  instance.
- ``ROLE`` (``all``): ``all`` | ``api`` | ``worker``, as in a split deployment. An instance with
  ``ROLE=api`` or ``worker`` and no ``CHROMA_URL`` refuses the RAG kinds: a local store would not be
  shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from workers.settings import Settings

BUILTIN_MODULES = {
    "workers.ocr": "DISABLE_OCR",
    "workers.rag": "DISABLE_RAG",
    "workers.agent": "DISABLE_AGENTS",
    "workers.browser": "DISABLE_BROWSER",
}
DIAGNOSTIC_MODULE = "workers.diagnostic"
RAG_SWITCH = "DISABLE_RAG"
Role = Literal["all", "api", "worker"]
# For a URL that names no port: Chroma's own default (`chroma run`) over http, 443 over https.
DEFAULT_PORTS = {"http": 8000, "https": 443}


class KindSettings(Settings):
    """``TASK_MODULES`` is a comma-separated list of importable modules that register user kinds."""

    model_config = SettingsConfigDict(extra="ignore")

    enable_diagnostic_tasks: bool = False
    disable_ocr: bool = False
    disable_rag: bool = False
    disable_agents: bool = False
    disable_browser: bool = False
    task_modules: str = ""
    chroma_url: str | None = None
    role: Role = "all"

    @field_validator("task_modules")
    @classmethod
    def _module_names(cls, value: str) -> str:
        for name in _split(value):
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"TASK_MODULES: {name!r} is not a module name")
        return value

    @field_validator("chroma_url", mode="before")
    @classmethod
    def _chroma_url(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            return None  # an env var left empty (as blueprints often leave it) means unset
        return normalise_chroma_url(value.strip())

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

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

    def missing_settings(self) -> dict[str, tuple[str, str]]:
        """Kinds this instance refuses for want of a setting: their switch -> (setting, why)."""
        if self.role != "all" and not self.chroma_url:
            why = (
                f"needs CHROMA_URL when ROLE={self.role}: the instances of a split deployment would "
                "each keep a store of their own on their own disk"
            )
            return {RAG_SWITCH: ("CHROMA_URL", why)}
        return {}

    def vector_store(self, data_dir: Path, database_url: str | None) -> dict[str, Any]:
        """Where the RAG kinds keep their vectors, and a warning if instances would diverge."""
        warning = None
        shared_database = (database_url or "").startswith("postgres")
        if not self.chroma_url and shared_database and not self.disable_rag:
            warning = (
                "DATABASE_URL is a shared PostgreSQL but the RAG store is local to this instance "
                f"({data_dir / 'chroma'}): documents ingested on one instance are not found on "
                "another; set CHROMA_URL to a Chroma server (a single instance with a disk is fine)"
            )
        return {
            "kind": "chroma-server" if self.chroma_url else "local",
            "location": self.chroma_url or str(data_dir / "chroma"),
            "warning": warning,
        }


def normalise_chroma_url(value: str) -> str:
    """``scheme://host:port`` of a Chroma server, or ValueError naming what is wrong."""
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"CHROMA_URL {value!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"CHROMA_URL must be an http:// or https:// URL, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"CHROMA_URL {value!r} names no host")
    if parts.username or parts.password:
        raise ValueError("CHROMA_URL must not carry credentials (user:password@)")
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"CHROMA_URL must be scheme://host[:port] only, got {value!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or DEFAULT_PORTS[parts.scheme]}"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
