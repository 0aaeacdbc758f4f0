"""One settings object, read at process edges (CLI, the Ray Job's entry point, the app factory)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

HOME = Path.home() / ".pdistill"


class Settings(BaseSettings):
    """Environment variables `PDISTILL_<FIELD>` (e.g. PDISTILL_RAY_ADDRESS) override defaults."""

    model_config = SettingsConfigDict(env_prefix="PDISTILL_", frozen=True, extra="ignore")

    # None: start a local Ray head on the fly (on a free port: Redis holds 6379 here).
    ray_address: str | None = None
    # The Ray dashboard / Jobs API (http://HOST:8265); the control plane submits campaigns there.
    ray_dashboard_url: str | None = None
    # A SQLite file by default; an http:// tracking server in production. Never the file store.
    mlflow_tracking_uri: str = Field(default_factory=lambda: f"sqlite:///{HOME / 'mlflow.db'}")
    # Where checkpoints, stage records and artifacts live: a local directory or s3://bucket/prefix.
    storage_uri: str = Field(default_factory=lambda: str(HOME / "storage"))
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "pdistill")
    database_url: str = Field(default_factory=lambda: f"sqlite:///{HOME / 'pdistill.db'}")

    # The control plane (`pdistill serve`): where it listens, and the admin bearer token.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_token: SecretStr | None = None
    # The CLI client (`pdistill submit/status/watch/...`): which API, with which team token.
    api_url: str = "http://127.0.0.1:8000"
    api_token: SecretStr | None = None
