"""The one typed settings object. Every value can be overridden by an ``RTREC_*`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rtrec.events import EventType


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RTREC_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Root of everything a run creates.")
    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="Feast online store kind.")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Used when online_store is redis.")
    redis_timeout_seconds: float = Field(0.5, gt=0, description="Redis socket timeout; serving falls back after it.")
    api_host: str = Field("127.0.0.1", description="Address `rtrec serve` binds.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port `rtrec serve` binds.")
    api_server: Literal["uvicorn", "granian"] = Field(
        "uvicorn",
        description="The HTTP server `rtrec serve` runs: uvicorn, or granian (the README's Settings weighs them).",
    )
    api_token: SecretStr | None = Field(None, description="Bearer token required by write endpoints when set.")
    feedback_log: Literal["local", "redis"] = Field(
        "local",
        description="Where the API logs accepted events: `local` files on each host, or `redis`, one log every API "
        "host shares (a repeated event_id is accepted once across hosts; needs appendonly yes and appendfsync "
        "always), which the nightly flow collects into the landing zone.",
    )
    feedback_redis_url: str | None = Field(
        None, description="The Redis of the shared feedback log (default: redis_url)."
    )
    feedback_file_max_bytes: int = Field(
        8 * 2**20, ge=4096, description="The API starts a new feedback log file after this many bytes."
    )
    serving_tick_seconds: float = Field(
        1.0,
        gt=0,
        description="How often each API worker looks for a new model and catalog and finishes pending deletions.",
    )
    ctr_window_seconds: float = Field(
        300.0, gt=0, description="The sliding window of the online click-through rate on /metrics (rtrec_online_ctr)."
    )
    max_recent_items: int = Field(50, ge=1, le=1000, description="Length of a user's online recent-items state.")
    max_seen_items: int = Field(
        10_000,
        ge=1,
        description="Items a user's online seen set keeps (the latest first seen); recommendations leave them out.",
    )
    repeatable_event_types: list[EventType] = Field(
        default_factory=list,
        description="Seen items whose strongest event type is one of these may be recommended again (e.g. purchase, "
        "for consumables); every other seen item is left out.",
    )
    train_processes: int = Field(
        1,
        ge=1,
        description="Training processes on this machine: more than 1 runs the train step under torchrun with "
        "DistributedDataParallel (gloo on CPUs, NCCL on GPUs).",
    )
    train_budget_seconds: float | None = Field(
        1200.0,
        gt=0,
        description="The nightly training starts no epoch that would, at its pace so far, end past this many "
        "seconds (unset: no limit); early stopping and the epoch limit still apply.",
    )
    schedule_cron: str | None = Field(None, description="Overrides the nightly schedule prefect.yaml declares.")
    schedule_timezone: str | None = Field(None, description="Overrides the time zone prefect.yaml declares.")

    @property
    def feedback_log_url(self) -> str:
        return self.feedback_redis_url or self.redis_url

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def events_dir(self) -> Path:
        """Batch event files (generated or imported), one parquet file per chunk."""
        return self.landing_dir / "events"

    @property
    def feedback_dir(self) -> Path:
        """Feedback log that serving appends accepted events to."""
        return self.landing_dir / "feedback"

    @property
    def marts_dir(self) -> Path:
        """The marts dbt writes as parquet, read by Feast, the trainer and serving."""
        return self.data_dir / "marts"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def dbt_dir(self) -> Path:
        """dbt's own target and log folders for this data directory (compiled SQL, run results)."""
        return self.data_dir / "dbt"

    @property
    def feast_dir(self) -> Path:
        return self.data_dir / "feast"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def prometheus_dir(self) -> Path:
        """Where `rtrec serve --workers N` (N > 1) has its workers keep the Prometheus values it sums."""
        return self.data_dir / "prometheus"

    @property
    def logs_dir(self) -> Path:
        """The full logs of `rtrec pipeline` runs, and the demo's API log."""
        return self.data_dir / "logs"

    @property
    def experiments_dir(self) -> Path:
        """The running experiment, every start and stop, and the lists served while one ran."""
        return self.data_dir / "experiments"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
