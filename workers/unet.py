"""Improved-DDPM U-Net conditioned on log-SNR, as used by progressive distillation.

Layout (Ho et al. 2020; Nichol & Dhariwal 2021; Salimans & Ho 2022):
conv_in → per level `num_res_blocks` res blocks (+ self-attention at `attn_resolutions`),
then a downsampling res block between levels → middle res-attn-res → per level
`num_res_blocks + 1` res blocks over concatenated skips (+ attention), then an upsampling res
block between levels → GroupNorm → SiLU → zero-initialised conv_out. Residual branches and the
output end in zero-initialised layers, so a fresh model predicts exactly zero.

Time conditioning follows the official code: logsnr → t = arctan(exp(-logsnr/2)) / (π/2),
a sinusoidal embedding of 1000·t, then an MLP; each res block applies it as FiLM
(norm(h) · (1 + scale) + shift).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture and data shape of a `UNet`.

    `num_heads` is the number of attention heads; it must divide the channel count at every
    level that has attention. `emb_dim=None` means 4 * ch.
    """

    image_size: int
    in_channels: int
    out_channels: int
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    emb_dim: int | None = None
    dropout: float = 0.0
    num_heads: int = 1

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "in_channels",
            "out_channels",
            "ch",
            "num_res_blocks",
            "num_heads",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult={self.ch_mult} must be non-empty with entries >= 1")
        factor = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size={self.image_size} is not divisible by {factor}, which "
                f"ch_mult={self.ch_mult} ({len(self.ch_mult)} levels) needs"
            )
        for res in self.attn_resolutions:
            if res not in self.resolutions:
                raise ValueError(
                    f"attn_resolutions entry {res} is not a level of this U-Net; "
                    f"valid resolutions: {list(self.resolutions)}"
                )
        for level, mult in enumerate(self.ch_mult):
            has_attn = self.resolutions[level] in self.attn_resolutions
            # The last level also feeds the middle attention block.
            if (has_attn or level == len(self.ch_mult) - 1) and (self.ch * mult) % self.num_heads:
                raise ValueError(
                    f"num_heads={self.num_heads} does not divide {self.ch * mult} channels "
                    f"at resolution {self.resolutions[level]}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.emb_dim is not None and self.emb_dim < 1:
            raise ValueError(f"emb_dim={self.emb_dim} must be >= 1 or None")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size of each level, e.g. (28, 14, 7)."""
        return tuple(self.image_size // 2**i for i in range(len(self.ch_mult)))

    @property
    def time_emb_dim(self) -> int:
        return self.emb_dim if self.emb_dim is not None else 4 * self.ch

    def replace(self, **changes: Any) -> UNetConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown UNetConfig fields {unknown}; valid: {sorted(known)}")
        # JSON turns tuples into lists; a list would make the frozen config unhashable.
        fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**fixed)


@dataclass(frozen=True)
class UNetPreset:
    """The architecture half of a `UNetConfig`; the data shape is added by `preset_config`."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...] = ()
    emb_dim: int | None = None
    dropout: float = 0.0
    num_heads: int = 1


PRESETS: dict[str, UNetPreset] = {
    # Salimans & Ho 2022, CIFAR-10 teacher (60.0M parameters); students use dropout 0.
    "cifar10": UNetPreset(
        ch=256,
        ch_mult=(1, 1, 1),
        num_res_blocks=3,
        attn_resolutions=(16, 8),
        emb_dim=1024,
        dropout=0.2,
    ),
    "mnist-small": UNetPreset(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, dropout=0.1),
    "mnist-tiny": UNetPreset(ch=16, ch_mult=(1, 2), num_res_blocks=1),
    "digits-small": UNetPreset(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)),
}


def preset_config(name: str, *, image_size: int, in_channels: int, out_channels: int) -> UNetConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; valid presets: {sorted(PRESETS)}")
    return UNetConfig(
        image_size=image_size,
        in_channels=in_channels,
        out_channels=out_channels,
        **dataclasses.asdict(PRESETS[name]),
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _nhwc(x: Tensor) -> bool:
    """Whether `x` [B, C, H, W] is laid out channels_last (and not also plain contiguous)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that keeps a channels_last input channels_last.

    PyTorch's CUDA kernel returns a channels_last input as NCHW, so in a compiled NHWC network the
    strides around every norm disagreed with the convolutions': the compiled graphs then copied
    activations and gradients between the two layouts at each convolution. Here a channels_last
    input is normalised over NHWC views, with the same parameters, the same result (statistics
    in fp32, as autocast runs GroupNorm) and no copy; any other input takes PyTorch's kernel.

    `per_channel_stats` (set by `workers.accel.place`) chooses how the NHWC statistics are
    reduced. Off: one reduction per (image, group) over H*W and the group's channels, whose
    reads stride across the channels. On: per channel over H*W first (reads along the
    contiguous channels), then combined exactly per group, in a second small kernel. On an H200
    the second way cut the update's GPU time by 7%, but its extra kernels slowed an update
    launched from the host by ~10% (BENCHMARKS.md), so it is on only where the update is
    replayed as one CUDA graph (`Accel.norm_channel_stats`).
    """

    per_channel_stats: bool = False

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or not _nhwc(x):
            return super().forward(x)
        B, C, H, W = x.shape
        g, n = self.num_groups, C // self.num_groups
        h = x.permute(0, 2, 3, 1).reshape(B, H * W, g, n)  # a view of the NHWC memory
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()
        if self.per_channel_stats:
            var_c, mean_c = torch.var_mean(h, dim=1, correction=0, keepdim=True)
            # Equal counts per channel: the group's variance is the mean of its channels'
            # variances plus the variance of their means.
            mean = mean_c.mean(3, keepdim=True)
            var = var_c.mean(3, keepdim=True) + (mean_c - mean).square().mean(3, keepdim=True)
            scale = torch.rsqrt(var + self.eps).expand(B, 1, g, n)
            shift = -mean * scale
            if self.affine:
                w = self.weight.view(g, n)
                scale, shift = scale * w, shift * w + self.bias.view(g, n)
            return (h * scale + shift).reshape(B, H, W, C).permute(0, 3, 1, 2)
        var, mean = torch.var_mean(h, dim=(1, 3), correction=0, keepdim=True)
        y = ((h - mean) * torch.rsqrt(var + self.eps)).reshape(B, H, W, C)
        if self.affine:
            y = y * self.weight + self.bias
        return y.permute(0, 3, 1, 2)


def _norm(channels: int) -> GroupNorm:
    """GroupNorm with the largest group count <= 32 that divides `channels`."""
    groups = next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)
    return GroupNorm(groups, channels)


def _cat_channels(a: Tensor, b: Tensor) -> Tensor:
    """torch.cat along channels, written channels_last when `a` is (a compiled graph would
    otherwise choose NCHW for it and copy it back for the convolution that reads it)."""
    if _nhwc(a):
        return torch.cat([a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)], dim=3).permute(0, 3, 1, 2)
    return torch.cat([a, b], dim=1)


def _zero(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding. t: [B] (any scale) → [B, dim]."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, device=t.device, dtype=torch.float32)
        / max(half - 1, 1)
    )
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def logsnr_to_time(logsnr: Tensor) -> Tensor:
    """Inverse of the cosine schedule: logsnr [B] → t [B] in [0, 1] (official code's mapping)."""
    return torch.atan(torch.exp(-0.5 * logsnr.float().clamp(-20.0, 20.0))) / (math.pi / 2)


class ResBlock(nn.Module):
    """Pre-activation res block with FiLM; `resample` ('down'/'up') halves/doubles H and W."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, resample: str | None = None
    ) -> None:
        super().__init__()
        assert resample in (None, "down", "up")
        self.resample = resample
        self.norm1 = _norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = _norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self._resample(F.silu(self.norm1(x)))
        x = self._resample(x)
        h = self.conv1(h)
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        heads, d = self.num_heads, C // self.num_heads
        qkv = self.qkv(self.norm(x))  # channels ordered (q/k/v, head, d)
        if _nhwc(qkv):  # views of the NHWC memory both ways, in the forward and the backward
            qkv = qkv.permute(0, 2, 3, 1).reshape(B, H * W, 3, heads, d).permute(2, 0, 3, 1, 4)
            h = F.scaled_dot_product_attention(*qkv.unbind(0))  # [B, heads, HW, d]
            h = h.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)
        else:
            q, k, v = qkv.reshape(B, 3, heads, d, H * W).transpose(-1, -2).unbind(dim=1)
            h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, d]
            h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class _Stage(nn.Module):
    """A res block followed by attention (or identity)."""

    def __init__(self, block: ResBlock, attn: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.attn = attn

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return self.attn(self.block(h, emb))


class UNet(nn.Module):
    """z_t [B, in_channels, H, W], logsnr [B] → [B, out_channels, H, W], always fp32.

    `compute_dtype` (not part of the state): None runs in the parameters' dtype; bf16 runs the
    network under autocast (`workers/accel.py` sets it) and casts the output back to fp32.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.compute_dtype: torch.dtype | None = None
        self.config = c = config
        emb = c.time_emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(c.ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, 3, padding=1)

        def attn_or_id(res: int, chans: int) -> nn.Module:
            return AttnBlock(chans, c.num_heads) if res in c.attn_resolutions else nn.Identity()

        # Encoder: every stage's output is kept as a skip for the decoder.
        self.down = nn.ModuleList()
        skip_chans = [c.ch]
        chans = c.ch
        last = len(c.ch_mult) - 1
        for level, mult in enumerate(c.ch_mult):
            res = c.resolutions[level]
            for _ in range(c.num_res_blocks):
                block = ResBlock(chans, c.ch * mult, emb, c.dropout)
                chans = c.ch * mult
                self.down.append(_Stage(block, attn_or_id(res, chans)))
                skip_chans.append(chans)
            if level != last:
                block = ResBlock(chans, chans, emb, c.dropout, resample="down")
                self.down.append(_Stage(block, nn.Identity()))
                skip_chans.append(chans)

        self.mid1 = ResBlock(chans, chans, emb, c.dropout)
        self.mid_attn = AttnBlock(chans, c.num_heads)
        self.mid2 = ResBlock(chans, chans, emb, c.dropout)

        # Decoder: every non-upsampling res block consumes one encoder skip (concatenated).
        self.up = nn.ModuleList()
        self.up_takes_skip: list[bool] = []
        for level in reversed(range(len(c.ch_mult))):
            res = c.resolutions[level]
            for _ in range(c.num_res_blocks + 1):
                block = ResBlock(chans + skip_chans.pop(), c.ch * c.ch_mult[level], emb, c.dropout)
                chans = c.ch * c.ch_mult[level]
                self.up.append(_Stage(block, attn_or_id(res, chans)))
                self.up_takes_skip.append(True)
            if level != 0:
                block = ResBlock(chans, chans, emb, c.dropout, resample="up")
                self.up.append(_Stage(block, nn.Identity()))
                self.up_takes_skip.append(False)
        assert not skip_chans

        self.norm_out = _norm(chans)
        self.conv_out = _zero(nn.Conv2d(chans, c.out_channels, 3, padding=1))

    def forward(self, z_t: Tensor, logsnr: Tensor) -> Tensor:
        c = self.config
        expected = (c.in_channels, c.image_size, c.image_size)
        if z_t.ndim != 4 or tuple(z_t.shape[1:]) != expected:
            raise ValueError(f"z_t has shape {tuple(z_t.shape)}; expected [B, *{expected}]")
        if logsnr.shape != (z_t.shape[0],):
            raise ValueError(f"logsnr has shape {tuple(logsnr.shape)}; expected [{z_t.shape[0]}]")
        if self.compute_dtype is None:
            return self._net(z_t, logsnr)
        with torch.autocast(z_t.device.type, dtype=self.compute_dtype):
            out = self._net(z_t, logsnr)
        return out.float()

    def compile_body(self, **options: Any) -> None:
        """`torch.compile` the network's body (`options`: torch.compile's), not `forward`: the
        autocast context stays outside the graph. AOTAutograd never caches a graph that enters
        autocast, so a compiled `forward` traced and compiled its backward again in every
        process, the compile cache's artifacts notwithstanding (`bench/compile_cache.py`)."""
        self._net = torch.compile(self._net, **options)  # type: ignore[method-assign]

    def _net(self, z_t: Tensor, logsnr: Tensor) -> Tensor:
        c = self.config
        t_emb = timestep_embedding(1000.0 * logsnr_to_time(logsnr), c.ch)
        emb = self.time_mlp(t_emb.to(z_t.dtype))

        h = self.conv_in(z_t)
        skips = [h]
        for stage in self.down:
            h = stage(h, emb)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for stage, takes_skip in zip(self.up, self.up_takes_skip, strict=True):
            if takes_skip:
                h = _cat_channels(h, skips.pop())
            h = stage(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))
