"""The denoising UNet (Ho et al. 2020, as diffusers' ``UNet2DModel`` lays it out) and its training loss.

Going down, each resolution level runs ``layers_per_block`` ResBlocks (self-attention after each
one on the levels that ask for it) and halves the resolution with a stride-2 convolution, except
the last level. The middle is ResBlock, attention, ResBlock. Going up, each level runs one ResBlock
more than going down, each fed the matching activation from the way down (the skips, concatenated
on channels), and doubles the resolution (nearest neighbour, then a 3x3 convolution).

Every ResBlock adds the step's embedding (a sinusoid of ``t`` through a two-layer MLP, plus the
class's embedding) after its first convolution, so one network denoises at every noise level and
for every class. :meth:`DiffusionUNet.forward` is the training objective: it draws the step and
the noise itself and returns the mean squared error against the noise (or velocity), so the one
training engine trains it like any other model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import ModelBase, ModelOutput
from glassformer.models.diffusion.config import DiffusionConfig
from glassformer.models.diffusion.schedule import NoiseSchedule
from glassformer.nn.attention import MultiHeadAttention

EVAL_SEED = 0  # the draws of every eval-mode loss (see DiffusionUNet.forward)
MAX_PERIOD = 10_000  # the longest wavelength of the time sinusoid, in steps (as the Transformer's positions)


def timestep_embedding(t: Tensor, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0) -> Tensor:
    """``(B,)`` steps -> ``(B, dim)`` sinusoids at ``dim // 2`` frequencies from 1 to ~1/MAX_PERIOD.

    ``flip_sin_to_cos`` orders the halves [cos, sin]; ``freq_shift`` (diffusers' "downscale freq
    shift") spaces the frequencies as ``exp(-ln(MAX_PERIOD) * i / (half - shift))``."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - freq_shift))
    angles = t.float()[:, None] * freqs[None, :]  # (B, half)
    sin, cos = angles.sin(), angles.cos()
    return torch.cat([cos, sin] if flip_sin_to_cos else [sin, cos], dim=-1)  # (B, dim)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; add the step embedding; GroupNorm, SiLU, dropout, 3x3 conv; plus the input."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, groups: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_proj = nn.Linear(temb_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None  # match widths for the residual

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]  # (B, C_out, 1, 1) broadcast over pixels
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (x if self.skip is None else self.skip(x)) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the pixels of a feature map (each pixel a token), residual."""

    def __init__(self, channels: int, head_dim: int, groups: int, eps: float, backend: str) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.attn = MultiHeadAttention(channels, channels // head_dim, backend=backend)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        out, _ = self.attn(tokens)  # (B, H*W, C)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Level(nn.Module):
    """One resolution level: ResBlocks, optional attention after each, optional resampling after all."""

    def __init__(self, blocks: list[ResBlock], attns: list[SelfAttention2d], resample: nn.Module | None) -> None:
        super().__init__()
        self.res = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)
        self.resample = resample


class Upsample(nn.Module):
    """Nearest-neighbour 2x, then a 3x3 convolution (which smooths the blocky copy)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _level(c_ins: list[int], c_out: int, attend: bool, resample: nn.Module | None, config: DiffusionConfig) -> Level:
    """ResBlocks taking ``c_ins[j]`` channels to ``c_out``, attention after each when ``attend``."""
    cfg = config
    blocks = [ResBlock(c, c_out, cfg.temb_dim, cfg.norm_groups, cfg.norm_eps, cfg.dropout) for c in c_ins]
    attns = [SelfAttention2d(c_out, cfg.head_dim, cfg.norm_groups, cfg.norm_eps, cfg.attn_backend)
             for _ in c_ins] if attend else []  # fmt: skip
    return Level(blocks, attns, resample)


class DiffusionUNet(ModelBase):
    """A class-conditional denoiser ``eps_theta(x_t, t, y)`` (or ``v_theta``) with its schedule."""

    family = "diffusion"
    config_class = DiffusionConfig

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__(config)
        cfg, chans = config, config.channels
        self.schedule = NoiseSchedule.from_config(config)
        self.time_mlp = nn.Sequential(nn.Linear(chans[0], cfg.temb_dim), nn.SiLU(), nn.Linear(cfg.temb_dim, cfg.temb_dim))
        # one row per class plus the null class (index n_classes) that guidance conditions on for "no class"
        self.class_emb = nn.Embedding(cfg.n_classes + 1, cfg.temb_dim) if cfg.n_classes else None
        folded = cfg.in_channels * cfg.patch_size**2  # channels once the stem has folded each patch into one pixel
        self.conv_in = nn.Conv2d(folded, chans[0], 3, padding=1)
        skips = [chans[0]]  # widths of the activations the way up will concatenate, in order
        self.down = nn.ModuleList()
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            ins = [chans[max(i - 1, 0)]] + [c] * (cfg.layers_per_block - 1)
            self.down.append(_level(ins, c, cfg.attention[i], None if last else nn.Conv2d(c, c, 3, stride=2, padding=1), cfg))
            skips += [c] * (cfg.layers_per_block + (not last))
        self.mid = _level([chans[-1], chans[-1]], chans[-1], False, None, cfg)
        self.mid_attn = SelfAttention2d(chans[-1], cfg.head_dim, cfg.norm_groups, cfg.norm_eps, cfg.attn_backend) \
            if cfg.mid_attention else None  # fmt: skip
        self.up = nn.ModuleList()
        width = chans[-1]
        for i in reversed(range(len(chans))):
            c = chans[i]
            ins = []
            for _ in range(cfg.layers_per_block + 1):
                ins.append(width + skips.pop())
                width = c
            self.up.append(_level(ins, c, cfg.attention[i], Upsample(c) if i > 0 else None, cfg))
        self.norm_out = nn.GroupNorm(cfg.norm_groups, chans[0], eps=cfg.norm_eps)
        self.conv_out = nn.Conv2d(chans[0], folded, 3, padding=1)

    def embed(self, timesteps: Tensor, labels: Tensor | None) -> Tensor:
        """``(B,)`` steps (and labels) -> ``(B, temb_dim)``, what every ResBlock adds."""
        cfg = self.config
        sinusoid = timestep_embedding(timesteps, cfg.channels[0], flip_sin_to_cos=cfg.flip_sin_to_cos,
                                      freq_shift=cfg.freq_shift)  # fmt: skip
        emb = self.time_mlp(sinusoid.to(self.conv_in.weight.dtype))  # (B, temb_dim)
        if self.class_emb is not None:
            emb = emb + self.class_emb(labels)
        return emb

    def denoise(self, sample: Tensor, timesteps: Tensor | int, labels: Tensor | None = None) -> Tensor:
        """The network itself: ``(B, C, H, W)`` noisy images at steps ``timesteps`` -> ``(B, C, H, W)``
        predicted noise (or velocity). ``labels``: ``(B,)`` class ids, ``n_classes`` for "no class"."""
        self._check_pixels(sample, "sample")
        t = torch.as_tensor(timesteps, device=sample.device).reshape(-1).expand(sample.shape[0])  # (B,)
        emb = self.embed(t, self._labels(labels, sample))
        p = self.config.patch_size
        h = self.conv_in(F.pixel_unshuffle(sample, p) if p > 1 else sample)  # (B, C0, H/p, W/p)
        skips = [h]
        for level in self.down:
            h = self._run(level, h, emb, skips)
        h = self.mid.res[0](h, emb)
        h = self.mid_attn(h) if self.mid_attn is not None else h
        h = self.mid.res[1](h, emb)
        for level in self.up:
            h = self._run(level, h, emb, skips, pop=True)
        out = self.conv_out(F.silu(self.norm_out(h)))  # (B, C*p*p, H/p, W/p)
        return F.pixel_shuffle(out, p) if p > 1 else out  # (B, C, H, W)

    @staticmethod
    def _run(level: Level, h: Tensor, emb: Tensor, skips: list[Tensor], pop: bool = False) -> Tensor:
        """One level down (pushing skips) or up (popping and concatenating them)."""
        for j, block in enumerate(level.res):
            h = block(torch.cat([h, skips.pop()], dim=1) if pop else h, emb)  # up: (B, C + C_skip, H, W)
            if len(level.attn):
                h = level.attn[j](h)
            if not pop:
                skips.append(h)
        if level.resample is not None:
            h = level.resample(h)  # down: (B, C, H/2, W/2); up: (B, C, 2H, 2W)
            if not pop:
                skips.append(h)
        return h

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None, *, timesteps: Tensor | None = None,
                noise: Tensor | None = None, generator: torch.Generator | None = None) -> ModelOutput:
        """The denoising loss on clean images ``(B, C, H, W)`` in [-1, 1] (``labels``: ``(B,)`` classes).

        Draws a step ``t ~ U{0..N-1}`` and Gaussian noise per image (unless given), noises the images,
        and scores the prediction against the noise (or velocity) by mean squared error. In training
        mode each label becomes the null class with probability ``class_dropout``, which teaches the
        unconditional branch classifier-free guidance needs. The draws come from ``generator``, else
        torch's default CPU generator, which the training engine seeds and checkpoints, so a resumed
        run draws what the uninterrupted one would have; drawing on the CPU keeps the stream the same
        on every device. In eval mode the draws restart from a fixed seed at every call instead: the
        loss depends strongly on ``t``, and fixed draws make the evaluations of different checkpoints
        (and so the engine's choice of ``best/``) compare like with like. ``logits`` holds the prediction.
        """
        x0 = self._check_pixels(pixel_values, "pixel_values")
        b, device = x0.shape[0], x0.device
        if generator is None and not self.training:
            generator = torch.Generator().manual_seed(EVAL_SEED)
        if timesteps is None:
            timesteps = torch.randint(0, self.config.num_train_timesteps, (b,), generator=generator)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
        timesteps, noise = timesteps.to(device), noise.to(device=device, dtype=x0.dtype)
        labels = self._labels(labels, x0)
        if labels is not None and self.training and self.config.class_dropout > 0:
            dropped = (torch.rand(b, generator=generator) < self.config.class_dropout).to(device)
            labels = labels.masked_fill(dropped, self.config.null_class)
        x_t = self.schedule.add_noise(x0, noise, timesteps)  # (B, C, H, W)
        prediction = self.denoise(x_t, timesteps, labels)
        target = self.schedule.target(x0, noise, timesteps)
        loss = F.mse_loss(prediction.float(), target.float())
        return ModelOutput(loss=loss, logits=prediction)

    def _check_pixels(self, x: Tensor, name: str) -> Tensor:
        cfg = self.config
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != cfg.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be (batch, {cfg.in_channels}, height, width) images; got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be floating point (pixels scaled to [-1, 1]); got {x.dtype}")
        factor = cfg.size_multiple
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(
                f"{name} is {x.shape[2]}x{x.shape[3]}; this UNet folds {cfg.patch_size}x{cfg.patch_size} patches and "
                f"halves the resolution {len(cfg.channels) - 1} times, so height and width must be multiples of "
                f"{factor} (pad the images, e.g. 28 -> 32)"
            )
        return x

    def _labels(self, labels: Tensor | None, like: Tensor) -> Tensor | None:
        """Checked ``(B,)`` class ids; None on an unconditional model, the null class when not given."""
        cfg = self.config
        if cfg.n_classes == 0:
            if labels is not None:
                raise ValueError("this diffusion model is unconditional (n_classes=0): it takes no labels")
            return None
        if labels is None:
            return torch.full((like.shape[0],), cfg.null_class, dtype=torch.long, device=like.device)
        labels = torch.as_tensor(labels, device=like.device)
        if labels.is_floating_point() or labels.shape != (like.shape[0],):
            raise ValueError(f"labels must be ({like.shape[0]},) integer class ids; got {tuple(labels.shape)} {labels.dtype}")
        if labels.numel() and (labels.min() < 0 or labels.max() > cfg.n_classes):
            raise ValueError(
                f"labels must lie in [0, {cfg.n_classes - 1}] (or {cfg.null_class}, the null class); "
                f"got {labels.min().item()}..{labels.max().item()}"
            )
        return labels.long()
