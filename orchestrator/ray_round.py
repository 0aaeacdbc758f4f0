"""A halving round as a Ray Train V2 job: DDP over `workers` ranks, checkpoints every K updates.

The run name is derived from the campaign and round (and trial) ids, never from time, so calling
`fit()` again after a crash resumes from the last checkpoint in storage (Train V2 restores a run
from `<storage>/<name>` by itself).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from orchestrator.compile_cache import CompileCache
from orchestrator.history import TRAIN_LOSS, TRAIN_START
from orchestrator.storage import Storage
from orchestrator.tracking import Tracker
from workers.accel import FastPath, choose, prepare
from workers.checkpoint import load_unet
from workers.config import DiffusionConfig
from workers.data import load_dataset, split_dataset
from workers.distill import distillation_loss
from workers.training import GraphCaptureError, Updater, sample_batch
from workers.unet import UNet, UNetConfig

VAL_FRACTION = 0.05  # held-out images for the validation distillation loss (Tune's metric)
VAL_PAIRS = 256


@dataclass(frozen=True)
class RoundJob:
    """Everything a Train worker needs; plain data, so it pickles to any node."""

    name: str  # e.g. "mnist-demo-round-2" (also the Train run name)
    dataset: str
    teacher_uri: str
    unet: dict[str, Any]  # the student's U-Net config
    output: str
    weighting: str
    student_steps: int
    updates: int  # length of the LR schedule
    stop_at: int  # stop after this many updates (a Tune trial runs a prefix of the schedule)
    batch_size: int  # global, split across workers
    lr: float
    grad_clip: float
    seed: int
    report_every: int
    threads: int = 1
    fast_path: FastPath = "auto"  # workers/accel.py: "auto" is the fast path on a GPU
    cuda_graphs: bool = True  # each update one CUDA graph where that can be (one GPU worker)
    init_checkpoint: str | None = None  # a Train checkpoint (storage path) to start from
    storage_uri: str | None = None  # the campaign storage the init checkpoint lives in
    compile_cache: str | None = None  # its folder of torch.compile results (compile_cache.py)
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None  # rank 0 logs train/loss and val/distill_loss here


CHECKPOINT_FILES = ("student.safetensors", "updater.pt")


class CorruptCheckpointError(RuntimeError):
    """A Train checkpoint whose files do not match its manifest (e.g. an interrupted upload)."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _save(dirpath: Path, student: torch.nn.Module, updater: Updater, meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    save_file(state, str(dirpath / "student.safetensors"))
    torch.save(updater.state_dict(), dirpath / "updater.pt")
    files = {name: _sha256(dirpath / name) for name in CHECKPOINT_FILES}
    (dirpath / "meta.json").write_text(json.dumps({**meta, "files": files}))


def verified(dirpath: Path, where: str) -> dict[str, Any]:
    """The checkpoint's meta.json, after checking every file against the digests it lists, so a
    checkpoint that is incomplete in storage is refused instead of loaded."""
    try:
        meta: dict[str, Any] = json.loads((dirpath / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"checkpoint {where}: meta.json unreadable: {exc}") from exc
    for name in CHECKPOINT_FILES:
        path = dirpath / name
        if not path.is_file():
            raise CorruptCheckpointError(f"checkpoint {where}: {name} is missing")
        if _sha256(path) != meta.get("files", {}).get(name):
            raise CorruptCheckpointError(f"checkpoint {where}: {name} does not match its digest")
    return meta


def _restore(
    dirpath: Path, student: torch.nn.Module, where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    meta = verified(dirpath, where)
    student.load_state_dict(load_file(str(dirpath / "student.safetensors")))
    updater_state = torch.load(dirpath / "updater.pt", weights_only=False)
    return updater_state, meta


def _any_rank_true(flag: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)  # NCCL reduces GPU tensors only
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def train_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """The per-worker loop of a round (runs inside a Ray Train worker)."""
    import ray.train
    from ray.train import Checkpoint
    from ray.train.torch import get_device, prepare_model

    job = RoundJob(**cfg)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(job.threads)
    diffusion = DiffusionConfig(job.output, job.weighting)  # type: ignore[arg-type]

    train_ds, val_ds = split_dataset(
        load_dataset(job.dataset), fraction=VAL_FRACTION, seed=job.seed
    )
    shard = train_ds.images[rank::world]
    teacher, _ = load_unet(job.teacher_uri)
    teacher.requires_grad_(False)
    student = UNet(UNetConfig.from_dict(job.unet))
    updater_state: dict[str, Any] | None = None
    storage = Storage(job.storage_uri) if job.storage_uri else None  # the campaign's
    resume = ray.train.get_checkpoint()
    if resume is not None:
        with resume.as_directory() as d:
            updater_state, _ = _restore(Path(d), student, resume.path)
    elif job.init_checkpoint is not None:
        fs = storage.fs if storage is not None else None
        with Checkpoint(job.init_checkpoint, filesystem=fs).as_directory() as d:
            updater_state, _ = _restore(Path(d), student, job.init_checkpoint)
    else:
        student.load_state_dict(teacher.state_dict())
    device = get_device()  # the worker's GPU if it has one
    # DDP's all-reduce stays outside a CUDA graph: with several ranks the update is launched.
    accel = choose(job.fast_path, device, graphs=job.cuda_graphs and world == 1)
    cache = CompileCache(
        storage if job.compile_cache else None,
        job.compile_cache or "",
        enabled=accel.compile,
    )
    cache.load()
    prepare(teacher.eval(), accel)
    model = prepare_model(prepare(student, accel))  # DDP when world > 1
    shard = shard.to(device)
    updates = job.updates
    # Re-seeded from the update count, so a resumed run draws fresh batches deterministically.
    done = int(updater_state["done"]) if updater_state is not None else 0
    gen = torch.Generator(device).manual_seed(job.seed * 1_000_003 + rank * 7919 + done)
    updater = Updater(
        model,
        lr=job.lr,
        lr_scale=lambda i: max(0.0, 1.0 - i / updates),
        grad_clip=job.grad_clip,
        what=f"{job.name}",
        graph=accel.graphs,
        generators=(gen,),
    )
    if updater_state is not None:
        updater.load_state_dict(updater_state)
    # Fixed held-out (x, ε, i) triples: the validation loss compares learning rates fairly.
    vgen = torch.Generator().manual_seed(10_000 + job.seed)
    val_x = val_ds.images[:VAL_PAIRS].to(device)
    val_eps = torch.randn(val_x.shape, generator=vgen)
    val_i = torch.randint(0, job.student_steps, (val_x.shape[0],), generator=vgen)
    per_rank = max(1, job.batch_size // world)
    window: list[torch.Tensor] = []
    tracker = (
        Tracker(job.mlflow_uri) if rank == 0 and job.mlflow_uri and job.mlflow_run_id else None
    )
    if tracker is not None and job.mlflow_run_id is not None:  # this attempt's start
        tracker.metrics(job.mlflow_run_id, {TRAIN_START: done}, step=done)
    model.train()
    # Loop time across resumes (the checkpoint keeps it): a round's train_seconds, as the
    # teacher's and local-run's, whichever driver or Train worker ran the updates.
    start, before = time.perf_counter(), updater.seconds

    def loss_fn() -> torch.Tensor:
        x = sample_batch(shard, batch_size=per_rank, generator=gen)
        return distillation_loss(
            model, teacher, x=x, student_steps=job.student_steps, diffusion=diffusion, generator=gen
        )

    while updater.done < job.stop_at:
        # No host sync: a non-finite update is skipped and noted.
        try:
            window.append(updater.update(loss_fn))
        except GraphCaptureError as exc:  # one worker (no DDP); each retry would fail the same
            return {"failed": str(exc)}
        if updater.done % job.report_every and updater.done != job.stop_at:
            continue
        # Every rank must agree to stop, or the others wait in DDP's all-reduce forever. The
        # weights are still those before the first non-finite update; nothing is checkpointed.
        err = updater.divergence()
        if _any_rank_true(err is not None, device):
            return {"failed": str(err or f"{job.name}: another rank diverged")}
        metrics: dict[str, Any] = {
            "update": updater.done,
            "train_loss": float(torch.stack(window).mean()),
            "val_loss": float("nan"),
        }
        window.clear()
        updater.seconds = before + time.perf_counter() - start
        metrics["train_seconds"] = updater.seconds
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                model.eval()
                with torch.no_grad():
                    metrics["val_loss"] = float(
                        distillation_loss(
                            student,
                            teacher,
                            x=val_x,
                            student_steps=job.student_steps,
                            diffusion=diffusion,
                            eps=val_eps,
                            i=val_i,
                        )
                    )
                model.train()
                if tracker is not None and job.mlflow_run_id is not None:
                    tracker.metrics(
                        job.mlflow_run_id,
                        {
                            TRAIN_LOSS: metrics["train_loss"],
                            "val/distill_loss": metrics["val_loss"],
                        },
                        step=updater.done,
                    )
                _save(Path(d), student, updater, {"update": updater.done, "job": asdict(job)})
                cache.save_once()  # every graph has run once by the first report
            ray.train.report(
                metrics, checkpoint=Checkpoint.from_directory(d) if rank == 0 else None
            )
    return {"update": updater.done}


def student_from_train_checkpoint(path: str, filesystem: Any = None) -> dict[str, torch.Tensor]:
    """The student weights in a Train checkpoint (a directory written by `train_worker`)."""
    from ray.train import Checkpoint
    from safetensors.torch import load_file

    with Checkpoint(path, filesystem=filesystem).as_directory() as d:
        verified(Path(d), path)
        return load_file(str(Path(d) / "student.safetensors"))
