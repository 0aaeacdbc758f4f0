"""The evaluation stage: FID of a model (and of its DDIM teacher) at a step count, against
reference statistics of the dataset kept in the campaign's storage; sample grids and metrics
to storage and MLflow. Idempotent like every stage (its record is written last)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from orchestrator.history import EVAL_SAMPLES
from orchestrator.local import feature_net
from orchestrator.tracking import Throttle
from workers.accel import prepare
from workers.checkpoint import load_unet
from workers.data import ImageDataset, load_dataset
from workers.evaluate import eval_noise, evaluate
from workers.features import FeatureNet
from workers.fid import FeatureStats, compute_stats
from workers.images import samples_files

if TYPE_CHECKING:
    from orchestrator.stages import Campaign


def reference_stats(c: Campaign, dataset: ImageDataset, net: FeatureNet) -> FeatureStats:
    """Reference statistics of the dataset, computed once per campaign, kept in storage."""
    rel = c.rel("reference-stats.npz")
    raw = c.storage.read_bytes(rel)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ref.npz"
        if raw is not None:
            path.write_bytes(raw)
            stats = FeatureStats.load(path)
            if stats.features == net.name:
                return stats
        stats = compute_stats(net, dataset.images)
        stats.save(path)
        c.storage.write_bytes(rel, path.read_bytes())
    return stats


def evaluate_stage(
    c: Campaign,
    step_count: int,
    uri: str,
    stage: str,
    *,
    tracker_run: str | None,
    teacher_uri: str | None = None,
) -> dict[str, Any]:
    """FID of the model at `uri` (and of the DDIM teacher) at `step_count` steps."""
    if (done := c.record(stage)) is not None:
        return done
    dataset = load_dataset(c.spec.dataset)
    accel = c.spec.resources.accel()
    features = feature_net(c.spec, dataset, c.settings.cache_dir, accel.device)
    reference = reference_stats(c, dataset, features)
    shape = (dataset.num_channels, dataset.image_size, dataset.image_size)
    noise = eval_noise(count=c.spec.evaluation.samples, shape=shape, seed=c.spec.seed + 1)
    out: dict[str, Any] = {
        "steps": step_count,
        "features": features.name,
        "samples": len(noise),
    }
    started = time.perf_counter()
    tracker = c.tracker() if tracker_run is not None else None
    pairs = [("fid", uri)] + ([("ddim_fid", teacher_uri)] if teacher_uri else [])
    drawn, total, due = 0, len(noise) * len(pairs), Throttle()

    def on_batch(n: int) -> None:  # its progress, for the driver (and MLflow's UI)
        nonlocal drawn
        drawn += n
        if tracker is not None and tracker_run is not None and due(last=drawn == total):
            tracker.metrics(tracker_run, {EVAL_SAMPLES: drawn}, step=drawn)

    cache = c.compile_cache(accel)
    cache.load()
    grids: dict[str, bytes] = {}  # MLflow artifacts
    tags: dict[str, str] = {}  # MLflow tags
    for key, model_uri in pairs:
        net, _ = load_unet(model_uri)
        ev = evaluate(
            prepare(net, accel),
            noise=noise,
            num_steps=step_count,
            output=c.diffusion.output,
            features=features,
            reference=reference,
            batch_size=c.spec.evaluation.batch_size,
            on_batch=on_batch,
        )
        out[key] = ev.fid
        kind = "distilled" if key == "fid" else "ddim"
        name = f"{kind}-{step_count}"
        npz, png = samples_files(ev.images)
        # The samples are stored once, in the campaign's storage (MLflow gets their URI as a tag,
        # as it does a checkpoint's); the grid goes to both, for the dashboard and MLflow's UI.
        out[f"{kind}_samples"] = c.storage.write_bytes(c.rel(f"samples/{name}.npz"), npz)
        out[f"{kind}_grid"] = c.storage.write_bytes(c.rel(f"samples/{name}.png"), png)
        grids[f"{name}.png"] = png
        tags[f"pdistill.{kind}_samples"] = out[f"{kind}_samples"]
    cache.save()
    out["eval_seconds"] = time.perf_counter() - started
    out["gpu_seconds"] = out["eval_seconds"] if torch.cuda.is_available() else 0.0
    if tracker is not None and tracker_run is not None:
        tracker.metrics(
            tracker_run,
            {f"eval/{k}": out[k] for k in ("fid", "ddim_fid") if k in out}
            | {
                "time/eval_seconds": out["eval_seconds"],
                "time/eval_gpu_seconds": out["gpu_seconds"],
            },
            step=step_count,
        )
        for file, data in grids.items():
            tracker.artifact_bytes(tracker_run, f"samples/{file}", data)
        for tag, value in (tags | {"pdistill.samples_grid": out["distilled_grid"]}).items():
            tracker.tag(tracker_run, tag, value)
    return c.write_record(stage, out)
