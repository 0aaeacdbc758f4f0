"""Progressive distillation (Salimans & Ho 2022, Algorithm 2; dpm.py): target, loss, one round."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workers.accel import Accel, choose, prepare
from workers.config import DiffusionConfig, DistillConfig
from workers.parameterization import ModelOutput, predict, weighted_loss
from workers.sampler import ddim_step
from workers.schedule import alpha_sigma, diffuse, logsnr_schedule_cosine, predict_eps_from_x
from workers.training import LoopResult, ProgressFn, run_updates, sample_batch
from workers.unet import UNet


def distillation_target(
    teacher: nn.Module,
    *,
    z_t: Tensor,
    t: Tensor,
    student_steps: int,
    output: ModelOutput,
) -> Tensor:
    """x̃ such that one student DDIM step t → t″ lands on the teacher's two steps t → t′ → t″.

    z_t: [B, C, H, W]; t: [B] on the student grid (i+1)/N. The teacher runs without clipping,
    in inference mode; the caller puts it in eval mode (no dropout). Where t″ = 0 the target is
    the teacher's x̂₂.
    """
    assert t.dim() == 1 and t.shape[0] == z_t.shape[0], (t.shape, z_t.shape)
    with torch.inference_mode():
        target = _two_step_target(teacher, z_t=z_t, t=t, student_steps=student_steps, output=output)
    return target.clone()  # a normal tensor again: the student's loss may save it for backward


def _two_step_target(
    teacher: nn.Module, *, z_t: Tensor, t: Tensor, student_steps: int, output: ModelOutput
) -> Tensor:
    n = float(student_steps)
    t1, t2 = t - 0.5 / n, t - 1.0 / n
    logsnr_t, logsnr_t1, logsnr_t2 = (logsnr_schedule_cosine(u) for u in (t, t1, t2))
    x_hat1, _ = predict(teacher, z=z_t, logsnr=logsnr_t, output=output)
    z_t1 = ddim_step(z_t=z_t, x_hat=x_hat1, logsnr_t=logsnr_t, logsnr_s=logsnr_t1)
    x_hat2, _ = predict(teacher, z=z_t1, logsnr=logsnr_t1, output=output)
    z_t2 = ddim_step(z_t=z_t1, x_hat=x_hat2, logsnr_t=logsnr_t1, logsnr_s=logsnr_t2)
    shape = (-1, *([1] * (z_t.dim() - 1)))
    alpha_t, sigma_t = (a.reshape(shape) for a in alpha_sigma(logsnr_t))
    alpha_t2, sigma_t2 = (a.reshape(shape) for a in alpha_sigma(logsnr_t2))
    frac = sigma_t2 / sigma_t
    x_tilde = (z_t2 - frac * z_t) / (alpha_t2 - frac * alpha_t)
    at_zero = (t2 <= 0.0).reshape(shape)
    return torch.where(at_zero, x_hat2, x_tilde)


def distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    *,
    x: Tensor,
    student_steps: int,
    diffusion: DiffusionConfig,
    generator: torch.Generator | None = None,
    eps: Tensor | None = None,
    i: Tensor | None = None,
) -> Tensor:
    """Mean weighted loss of the student against the two-step teacher target. x: [B, C, H, W].

    The grid index i ([B], in 0..N−1) and the noise eps ([B, C, H, W]) are drawn from `generator`
    (on x's device) unless given (a held-out loss on fixed pairs gives both).
    """
    batch = x.shape[0]
    if i is None:
        i = torch.randint(0, student_steps, (batch,), generator=generator, device=x.device)
    if eps is None:
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    eps = eps.to(x.device, x.dtype)
    t = (i.to(x.device, torch.float64) + 1) / student_steps
    logsnr = logsnr_schedule_cosine(t)
    z = diffuse(x=x, eps=eps, logsnr=logsnr).to(x.dtype)
    t, logsnr = t.to(x.dtype), logsnr.to(x.dtype)
    x_target = distillation_target(
        teacher, z_t=z, t=t, student_steps=student_steps, output=diffusion.output
    )
    eps_target = predict_eps_from_x(z=z, x=x_target, logsnr=logsnr)
    x_hat, eps_hat = predict(student, z=z, logsnr=logsnr, output=diffusion.output)
    return weighted_loss(
        x_hat=x_hat,
        eps_hat=eps_hat,
        x=x_target,
        eps=eps_target,
        logsnr=logsnr,
        weighting=diffusion.weighting,
    ).mean()


def distill_round(
    teacher: UNet,
    student: UNet,
    *,
    data: Tensor,
    diffusion: DiffusionConfig,
    config: DistillConfig,
    on_progress: ProgressFn | None = None,
    accel: Accel | None = None,
) -> LoopResult:
    """Train `student` (already initialised from the teacher) in place for one halving round.

    Fresh Adam, LR annealed linearly to 0, grad-norm clip, no EMA (the paper's distill setting).
    `accel` (default: the fast path on a GPU, plain on CPU) says where and how both networks run.
    """
    accel = accel if accel is not None else choose()
    teacher.eval()
    teacher.requires_grad_(False)
    prepare(teacher, accel)
    prepare(student, accel)
    data = data.to(accel.device)
    gen = torch.Generator(device=accel.device).manual_seed(config.seed)

    def loss_fn() -> Tensor:
        x = sample_batch(data, batch_size=config.batch_size, generator=gen)
        return distillation_loss(
            student,
            teacher,
            x=x,
            student_steps=config.student_steps,
            diffusion=diffusion,
            generator=gen,
        )

    updates = config.updates
    return run_updates(
        model=student,
        loss_fn=loss_fn,
        updates=updates,
        lr=config.lr,
        lr_scale=lambda i: max(0.0, 1.0 - i / updates),
        grad_clip=config.grad_clip,
        log_every=config.log_every,
        what=f"distillation to {config.student_steps} steps",
        on_progress=on_progress,
        graph=accel.graphs,
        generators=(gen,),
    )
