"""The distillation target of Algorithm 2, checked in float64 on a random teacher."""

import pytest
import torch

from workers.config import DiffusionConfig
from workers.distill import distillation_loss, distillation_target
from workers.parameterization import predict
from workers.sampler import ddim_step
from workers.schedule import (
    logsnr_schedule_cosine,
    predict_eps_from_x,
    predict_v_from_x_and_eps,
    t_from_logsnr,
)


class TinyNet(torch.nn.Module):
    def __init__(self, channels_out=1, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = torch.nn.Conv2d(1, channels_out, 3, padding=1).double()
        self.emb = torch.nn.Linear(1, channels_out).double()

    def forward(self, z, logsnr):
        return torch.tanh(self.conv(z) + self.emb(logsnr[:, None] / 20)[:, :, None, None])


def _teacher_two_steps(teacher, z_t, t, n, output):
    lam = [logsnr_schedule_cosine(u) for u in (t, t - 0.5 / n, t - 1.0 / n)]
    x1, _ = predict(teacher, z=z_t, logsnr=lam[0], output=output)
    z1 = ddim_step(z_t=z_t, x_hat=x1, logsnr_t=lam[0], logsnr_s=lam[1])
    x2, _ = predict(teacher, z=z1, logsnr=lam[1], output=output)
    return ddim_step(z_t=z1, x_hat=x2, logsnr_t=lam[1], logsnr_s=lam[2]), x2


@pytest.mark.parametrize("output", ["x", "v", "both"])
def test_one_student_step_lands_on_two_teacher_steps(output):
    n = 4
    teacher = TinyNet(channels_out=2 if output == "both" else 1)
    g = torch.Generator().manual_seed(0)
    i = torch.randint(0, n, (32,), generator=g)
    t = (i + 1).double() / n
    z_t = torch.randn(32, 1, 5, 5, generator=g, dtype=torch.float64)
    x_tilde = distillation_target(teacher, z_t=z_t, t=t, student_steps=n, output=output)
    z_t2, x2 = _teacher_two_steps(teacher, z_t, t, n, output)
    inner = i > 0  # t″ > 0: a DDIM step with x̃ lands exactly on the teacher's z_t″
    z_student = ddim_step(
        z_t=z_t[inner],
        x_hat=x_tilde[inner],
        logsnr_t=logsnr_schedule_cosine(t[inner]),
        logsnr_s=logsnr_schedule_cosine(t[inner] - 1.0 / n),
    )
    assert inner.any() and (~inner).any()
    assert torch.allclose(z_student, z_t2[inner], atol=1e-10, rtol=0)
    # t″ = 0: the sampler's last step returns x̂, so the target is the teacher's x̂₂.
    assert torch.equal(x_tilde[~inner], x2[~inner])


class TwoStepStudent(torch.nn.Module):
    """A student whose output is exactly the teacher's two-step map, read as `output`."""

    def __init__(self, teacher, n, output):
        super().__init__()
        self.teacher, self.n, self.output = teacher, n, output

    def forward(self, z, logsnr):
        t = t_from_logsnr(logsnr)
        x = distillation_target(self.teacher, z_t=z, t=t, student_steps=self.n, output=self.output)
        if self.output == "x":
            return x
        eps = predict_eps_from_x(z=z, x=x, logsnr=logsnr)
        return predict_v_from_x_and_eps(x=x, eps=eps, logsnr=logsnr)


@pytest.mark.parametrize("output", ["x", "v"])
@pytest.mark.parametrize("weighting", ["truncated_snr", "snr_plus_one", "constant"])
def test_student_equal_to_two_step_teacher_has_zero_loss(output, weighting):
    teacher = TinyNet()
    x = torch.rand(64, 1, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    kw = dict(
        x=x * 2 - 1,
        student_steps=4,
        diffusion=DiffusionConfig(output=output, weighting=weighting),
    )
    exact = distillation_loss(
        TwoStepStudent(teacher, 4, output),
        teacher,
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    assert exact.item() < 1e-16
    other = distillation_loss(
        TinyNet(seed=5), teacher, generator=torch.Generator().manual_seed(3), **kw
    )
    assert other.item() > 1e-4
