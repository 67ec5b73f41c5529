"""Settings of the agent kind's LLM node: an OpenAI-compatible chat-completions endpoint, optional.

- ``LLM_BASE_URL`` (unset): e.g. ``https://api.openai.com/v1``; unset means deterministic answers only.
  An empty value counts as unset.
- ``LLM_API_KEY`` (unset): sent as ``Authorization: Bearer <key>`` when set.
- ``LLM_MODEL`` (unset): the model name; required when ``LLM_BASE_URL`` is set.
- ``LLM_TIMEOUT_S`` (30): timeout of each network step (connect, write, each read), in seconds.
- ``LLM_MAX_TOKENS`` (512): ``max_tokens`` of the completion.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from workers.settings import Settings


class AgentSettings(Settings):
    """Read from the environment when the agent task starts (each task is its own process)."""

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore")

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_tokens: int = Field(default=512, ge=1, le=8192)

    @field_validator("base_url", "model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An env var set to "" (as blueprints often leave it) means "not configured".
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _model_with_endpoint(self) -> AgentSettings:
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("LLM_BASE_URL must start with http:// or https://")
        if self.base_url is not None and not self.model:
            raise ValueError("LLM_MODEL must be set when LLM_BASE_URL is")
        return self

    @property
    def llm_configured(self) -> bool:
        return bool(self.base_url)

    def completions_url(self) -> str:
        return f"{(self.base_url or '').rstrip('/')}/chat/completions"
