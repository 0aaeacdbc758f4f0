"""Shared by the Ray tests: one local Ray cluster, S3 on moto_server, MLflow on SQLite."""

from pathlib import Path

import boto3
import pytest

from orchestrator.ray_cluster import init_local
from orchestrator.settings import Settings


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint, stop_after_directory):
    # With its own state API address, so other Ray clusters on the machine don't confuse it.
    stop = stop_after_directory(Path(__file__).parent, init_local(num_cpus=2))
    yield
    stop()


@pytest.fixture(scope="session")
def settings(tmp_path_factory, s3_endpoint, cache_dir):
    boto3.client("s3").create_bucket(Bucket="pdistill-test")
    tmp = tmp_path_factory.mktemp("ray-campaign")
    return Settings(
        storage_uri="s3://pdistill-test/store",
        mlflow_tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}",
        cache_dir=cache_dir,
    )
