"""A campaign on a real local Ray cluster: Train (2 DDP workers), Tune, MLflow on SQLite, S3.

Checkpoints and records go to a real S3 endpoint (moto_server on 127.0.0.1); MLflow is a SQLite
store in a temp dir. Nothing here is mocked.
"""

import io

import boto3
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from orchestrator.campaign import run_campaign
from orchestrator.spec import parse_spec
from orchestrator.stages import StageError
from workers.checkpoint import load_unet
from workers.sampler import ddim_sample

SPEC = {
    "name": "ray-e2e",
    "dataset": "builtin:digits",
    "model": {"preset": "digits-small"},
    "diffusion": {"output": "v", "weighting": "snr_plus_one"},
    "teacher": {"train": {"updates": 60, "batch_size": 32, "warmup_updates": 5}},
    "steps": {"start": 4, "target": 1},
    "distill": {"updates": 20, "batch_size": 16, "checkpoint_every": 10},
    "tune": {"enabled": True, "trials": 2, "trial_updates": 10, "lr_min": 5e-5, "lr_max": 2e-4},
    "resources": {"workers": 2, "max_failures": 1},
    "evaluation": {"samples": 64, "batch_size": 64},
}


def _runs(client):
    """This campaign's runs (the session's MLflow store holds other tests' campaigns too)."""
    exp = client.get_experiment_by_name("pdistill")
    name = SPEC["name"]
    return client.search_runs(
        [exp.experiment_id], f"tags.`pdistill.key` LIKE 'campaign/{name}%'", max_results=1000
    )


@pytest.fixture(scope="module")
def finished(ray_cluster, settings):
    return run_campaign(parse_spec(SPEC), settings, poll_s=0.5)


def test_campaign_completes_with_fids_and_lrs(finished):
    assert [r["steps"] for r in finished["rounds"]] == [2, 1]
    assert finished["teacher"]["fid"] > 0
    for r in finished["rounds"]:
        assert r["fid"] > 0 and r["ddim_fid"] > 0
        assert r["checkpoint"].startswith("s3://pdistill-test/store/campaigns/ray-e2e/round-")
    assert all(5e-5 * 0.999 <= lr <= 2e-4 * 1.001 for lr in finished["lr"])


def test_mlflow_nests_campaign_rounds_trials(finished, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    runs = _runs(client)
    kinds = {}
    for r in runs:
        kinds.setdefault(r.data.tags["pdistill.kind"], []).append(r)
    assert len(kinds["campaign"]) == 1 and len(kinds["round"]) == 2 and len(kinds["trial"]) == 4
    campaign_id = kinds["campaign"][0].info.run_id
    rounds = {r.info.run_id: r for r in kinds["round"]}
    assert all(r.data.tags["mlflow.parentRunId"] == campaign_id for r in rounds.values())
    assert all(t.data.tags["mlflow.parentRunId"] in rounds for t in kinds["trial"])
    for r in rounds.values():
        assert {
            "eval/fid",
            "eval/ddim_fid",
            "train/loss",
            "val/distill_loss",
            "time/train_seconds",
            "time/train_wall_seconds",
            "time/train_gpu_seconds",
            "time/tune_gpu_seconds",
            "time/eval_gpu_seconds",
        } <= r.data.metrics.keys()
        assert r.data.metrics["time/train_gpu_seconds"] == 0.0  # CPU workers hold no GPU
        # The loop's time, without the Train job's start and the student's upload.
        assert 0 < r.data.metrics["time/train_seconds"] < r.data.metrics["time/train_wall_seconds"]
        steps = r.data.params["student_steps"]
        grids = {a.path for a in client.list_artifacts(r.info.run_id, "samples")}
        assert grids == {f"samples/distilled-{steps}.png", f"samples/ddim-{steps}.png"}
        # The samples themselves are stored once, in the campaign's storage, named by a tag.
        for kind in ("distilled", "ddim"):
            uri = r.data.tags[f"pdistill.{kind}_samples"]
            assert uri == f"s3://pdistill-test/store/campaigns/ray-e2e/samples/{kind}-{steps}.npz"
            body = boto3.client("s3").get_object(
                Bucket="pdistill-test", Key=uri.removeprefix("s3://pdistill-test/")
            )["Body"]
            with np.load(io.BytesIO(body.read())) as z:
                assert z["images"].shape == (SPEC["evaluation"]["samples"], 8, 8, 1)
        assert r.data.tags["pdistill.checkpoint"].startswith("s3://")
        assert "lr" in r.data.params
        # Its evaluation's progress (its first batch, then at most every 2 s, and its end): its
        # student's 64 samples, then DDIM's.
        drawn = client.get_metric_history(r.info.run_id, "eval/samples")
        assert [m.step for m in sorted(drawn, key=lambda m: (m.timestamp, m.step))] == [64, 128]
    assert all("val/distill_loss" in t.data.metrics for t in kinds["trial"])
    # The teacher's training loss, on the campaign run: its first log point and its last.
    teacher = client.get_metric_history(campaign_id, "teacher/loss")
    assert sorted(m.step for m in teacher) == [50, 60] and all(m.value > 0 for m in teacher)
    assert [m.step for m in client.get_metric_history(campaign_id, "eval/samples")] == [64]
    top = {a.path for a in client.list_artifacts(campaign_id)}
    assert {"resolved-spec.json", "report.json"} <= top
    # MLflow on SQLite keeps its artifacts in the campaign storage: on S3 here.
    assert kinds["campaign"][0].info.artifact_uri.startswith("s3://pdistill-test/store/")


def test_checkpoints_live_on_s3(finished):
    keys = {
        o["Key"]
        for o in boto3.client("s3").list_objects_v2(Bucket="pdistill-test", Prefix="store/")[
            "Contents"
        ]
    }
    for k in (
        "teacher.safetensors",
        "round-1/student.safetensors",
        "round-2/student.safetensors",
        "report.json",
        "stages/round-2-eval.json",
        "reference-stats.npz",
    ):
        assert f"store/campaigns/ray-e2e/{k}" in keys, k
    # What Ray kept of each round (Train and trial checkpoints, Tune's experiment) went with
    # the round once its student was stored: the students are what is left.
    ray = "store/campaigns/ray-e2e/ray/"  # its own key: the empty marker of the folder
    assert [k for k in keys if k.startswith(ray)] == [ray]


def test_registered_student_loads_and_samples(finished, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    mv = client.get_model_version("ray-e2e", finished["model_version"])
    net, config = load_unet(mv.source)
    assert config["steps"] == 1 and config["round"] == 2
    x = ddim_sample(net, noise=torch.randn(4, 1, 8, 8), num_steps=1, output="v")
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()


def test_rerun_skips_finished_stages_without_duplicate_runs(finished, settings):
    client = MlflowClient(settings.mlflow_tracking_uri)
    before = len(_runs(client))
    again = run_campaign(parse_spec(SPEC), settings, poll_s=0.5)
    assert again["rounds"] == finished["rounds"]
    assert len(_runs(client)) == before


def test_same_name_with_another_spec_is_refused(finished, settings):
    changed = parse_spec({**SPEC, "seed": 1})
    with pytest.raises(StageError, match="holds another campaign named 'ray-e2e'"):
        run_campaign(changed, settings, poll_s=0.5)


def test_quality_gate_fails_campaign_and_keeps_rounds(ray_cluster, settings, finished):
    spec = parse_spec(
        {
            **SPEC,
            "name": "ray-gate",
            "tune": {"enabled": False},
            "quality_gate": {"max_fid_growth": 1e-6},
        }
    )
    with pytest.raises(StageError, match="quality gate"):
        run_campaign(spec, settings, poll_s=0.5)
    s3 = boto3.client("s3")
    s3.head_object(
        Bucket="pdistill-test", Key="store/campaigns/ray-gate/round-1/student.safetensors"
    )
    status = s3.get_object(Bucket="pdistill-test", Key="store/campaigns/ray-gate/status.json")
    body = status["Body"].read().decode()
    assert '"failed"' in body and "quality gate" in body
