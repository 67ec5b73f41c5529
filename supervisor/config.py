"""The supervisor's settings, read once from the environment and validated at startup."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from workers.settings import Settings


class SupervisorSettings(Settings):
    """Every figure carries its unit in its name. Env var = field name in upper case."""

    model_config = SettingsConfigDict(extra="ignore", validate_assignment=True)

    data_dir: Path = Path("./data")
    database_url: str | None = Field(default=None, description="default: SQLite under DATA_DIR")
    runtime_dir: Path | None = Field(default=None, description="default: a fresh 0700 temp dir")
    memory_limit_mb: float | None = Field(
        default=None, gt=0, description="used when no cgroup limit is readable, or if lower"
    )
    safety_margin_mb: float = Field(default=48.0, ge=0)
    poll_interval_ms: int = Field(default=50, ge=5, le=2000)
    fast_poll_interval_ms: int = Field(default=10, ge=1, le=2000)
    min_poll_interval_ms: int = Field(default=2, ge=1, le=2000, description="for a tree growing fast")
    fast_poll_ratio: float = Field(default=0.75, gt=0, le=1, description="of the ceiling")
    container_high_water_pct: float = Field(default=94.0, ge=50, le=100)
    max_concurrency: int = Field(default=16, ge=1, le=1024)
    max_queue: int = Field(default=1000, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_timeout_s: float = Field(default=86400.0, gt=0)
    term_grace_s: float = Field(default=3.0, ge=0, le=60)
    drain_timeout_s: float = Field(default=20.0, ge=0, le=3600)
    worker_start_timeout_s: float = Field(default=20.0, gt=0)
    estimate_history: int = Field(default=20, ge=1, le=1000)
    estimate_headroom: float = Field(default=1.1, ge=1.0, le=10.0)
    estimate_min_samples: int = Field(default=3, ge=1)
    worker_cgroups: bool = Field(default=True, description="per-worker memory cgroups if writable")
    worker_data_limit: bool = Field(
        default=True, description="RLIMIT_DATA in each worker from its ceiling (no privilege needed)"
    )
    data_limit_slack_mb: float = Field(
        default=32.0, ge=0, le=4096, description="reservations a worker's libraries may add past its ceiling"
    )
    spare_workers: int = Field(default=1, ge=0, le=8, description="workers forked ahead of need")
    worker_threads: int = Field(default_factory=lambda: len(os.sched_getaffinity(0)), ge=1)
    web_concurrency: int = Field(default=1, description="must be 1: one supervisor per budget")
    role: Literal["all", "api", "worker"] = Field(
        default="all", description="api: HTTP only, runs nothing; worker: runs tasks, serves /healthz only"
    )
    database_pool_size: int = Field(default=4, ge=1, le=64, description="connections, plus one to LISTEN")
    database_pooler: Literal["auto", "session", "transaction"] = Field(
        default="auto", description="transaction: no LISTEN (PgBouncer transaction mode, Supabase 6543)"
    )
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=300)
    instance_dead_after_s: float = Field(default=30.0, gt=0, le=3600)
    queue_poll_interval_s: float = Field(default=0.5, gt=0, le=60, description="besides NOTIFY")
    task_retention_s: float = Field(default=7 * 86400.0, gt=0, description="finished tasks are deleted after")
    output_retention_s: float = Field(default=86400.0, gt=0, description="how long task outputs are kept")

    @model_validator(mode="after")
    def _check(self) -> SupervisorSettings:
        if self.web_concurrency != 1:
            raise ValueError(
                f"WEB_CONCURRENCY={self.web_concurrency}: must be 1, since each uvicorn worker would "
                "run its own supervisor against the same memory budget"
            )
        if self.fast_poll_interval_ms > self.poll_interval_ms:
            raise ValueError("FAST_POLL_INTERVAL_MS must not exceed POLL_INTERVAL_MS")
        if self.instance_dead_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError("INSTANCE_DEAD_AFTER_S must be at least twice HEARTBEAT_INTERVAL_S")
        if self.min_poll_interval_ms > self.fast_poll_interval_ms:
            raise ValueError("MIN_POLL_INTERVAL_MS must not exceed FAST_POLL_INTERVAL_MS")
        return self

    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'memvisor.db'}"

    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"
