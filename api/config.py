"""The API's settings, read once from the environment."""

from __future__ import annotations

import json

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from workers.settings import Settings


class ApiSettings(Settings):
    """Users' routes need no credentials unless API_KEYS or a Supabase JWT setting is given."""

    model_config = SettingsConfigDict(extra="ignore")

    port: int = Field(default=8000, ge=1, le=65535)
    host: str = "0.0.0.0"
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    admin_token: str | None = Field(
        default=None, min_length=8, description="admin routes exist only when set"
    )
    api_keys: str = Field(default="", description="comma-separated keys accepted on the users' routes")
    supabase_jwt_secret: str | None = Field(default=None, description="HS256 secret of a Supabase project")
    supabase_jwks: str | None = Field(default=None, description="a JWKS document (JSON) for RS256/ES256")
    supabase_jwks_url: str | None = Field(default=None, description="where to fetch the JWKS, if not given")
    jwt_audience: str = "authenticated"
    max_wait_s: float = Field(default=60.0, gt=0, le=3600, description="longest GET ?wait_s=")
    max_body_mb: float = Field(default=2.0, gt=0, le=1024, description="largest JSON request body")
    max_upload_mb: float = Field(default=20.0, gt=0, le=10240, description="largest uploaded file")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="largest image accepted for OCR")
    sse_ping_s: float = Field(default=15.0, gt=0, le=300)

    @field_validator(
        "admin_token", "supabase_jwt_secret", "supabase_jwks", "supabase_jwks_url", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("supabase_jwks")
    @classmethod
    def _jwks_is_json(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            document = json.loads(value)
        except ValueError:
            raise ValueError('not JSON; expected a JWKS document such as {"keys": [...]}') from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("expected a JWKS document with a 'keys' list")
        return value

    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.supabase_jwt_secret or self.supabase_jwks or self.supabase_jwks_url)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_list()) or self.jwt_enabled
