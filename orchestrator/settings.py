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
    # The Ray dashboard / Jobs API (http://HOST:8265); the control plane submits campaigns there
    # (unset: port 8265 on ray_address's host).
    ray_dashboard_url: str | None = None
    # Set by `pdistill serve` when the cluster is its own embedded head: a cluster that never
    # grows, so a campaign larger than it is refused at submission instead of waiting for ever.
    ray_embedded: bool = False
    # A SQLite file by default; an http:// tracking server in production. Never the file store.
    mlflow_tracking_uri: str = Field(default_factory=lambda: f"sqlite:///{HOME / 'mlflow.db'}")
    # Where checkpoints, stage records and artifacts live: a local directory or s3://bucket/prefix.
    storage_uri: str = Field(default_factory=lambda: str(HOME / "storage"))
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "pdistill")
    # How long a round's Ray Train workers (and an LR trial's) may wait to be placed, in all,
    # before the round fails (the rounds before it are kept): time for the autoscaler to add a
    # node, bounded so that a round whose workers cannot fit does not wait for ever.
    placement_timeout_s: float = Field(default=1800.0, gt=0)
    database_url: str = Field(default_factory=lambda: f"sqlite:///{HOME / 'pdistill.db'}")

    # The control plane (`pdistill serve`): where it listens, and the admin bearer token.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_token: SecretStr | None = None
    # The CLI client (`pdistill submit/status/watch/...`): which API, with which team token.
    api_url: str = "http://127.0.0.1:8000"
    api_token: SecretStr | None = None

    # The reconciler of `pdistill serve` (orchestrator/scheduler.py): whether this API process
    # runs it (false: it only serves; another replica admits and watches), and how often it
    # looks at the queue and at the running campaigns' Ray Jobs.
    reconcile: bool = True
    reconcile_interval_s: float = Field(default=1.0, gt=0)
    # While campaigns wait for GPUs, their demand goes to the Ray autoscaler when it changes and
    # again this often: `request_resources` keeps only the last request made on the cluster, and
    # Ray Train's own autoscaling coordinator makes requests too.
    autoscaler_refresh_s: float = Field(default=30.0, gt=0)
    # At most this many campaigns starting/running at once (None: as many as the cluster's free
    # CPUs and GPUs admit; a campaign needs resources.workers × cpus_per_worker CPUs, at least 1).
    max_running: int | None = Field(default=None, ge=1)
    # A campaign whose Ray Job has not come up this long after admission is requeued.
    start_timeout_s: float = Field(default=300.0, gt=0)
    # Driver deaths (job failed or lost without a final status) before a campaign is failed.
    max_restarts: int = Field(default=3, ge=0)
    # Forward the store, MLflow, storage and cache settings and the AWS_* variables to each
    # campaign's Ray Job (runtime_env env_vars, visible in the Ray dashboard). Turn off where the
    # Ray pods carry their own (the KubeRay deployment mounts them from the Secret).
    job_env_forward: bool = True
    # Links in API answers: the MLflow UI (default: the tracking URI when it is http(s)://).
    mlflow_ui_url: str | None = None
    # The embedded Ray head of `pdistill serve` (no ray_address): its CPUs (None: all) and the
    # directory that keeps its address and token, so a restarted API finds it again.
    embedded_ray_cpus: int | None = Field(default=None, ge=1)
    state_dir: Path = HOME
    # Server-sent events: how often GET /v1/campaigns/{id}/events looks at the store.
    events_poll_s: float = Field(default=1.0, gt=0)
