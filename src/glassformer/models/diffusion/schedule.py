"""The forward (noising) process: betas, q(x_t | x_0), and what a denoiser's output means.

``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` with ``abar_t = prod_{s<=t} (1 - beta_s)``. The
model predicts either ``eps`` ("epsilon") or the velocity ``v = sqrt(abar_t) eps - sqrt(1 -
abar_t) x_0`` ("v_prediction", Salimans & Ho 2022); :meth:`NoiseSchedule.split` turns either into
the pair ``(x_0, eps)`` the samplers need.

The betas and their cumulative product are computed in float32, the way ``diffusers`` builds them,
so a checkpoint trained here and one trained there share the same noise levels to the last bit;
all arithmetic on them afterwards is float64 and rounds once, to the sample's dtype.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from glassformer.models.diffusion.config import BETA_SCHEDULES, PREDICTIONS, DiffusionConfig

Spacing = Literal["leading", "trailing"]
SPACINGS: tuple[str, ...] = ("leading", "trailing")
MAX_BETA = 0.999  # the cosine schedule's cap: keeps the last step from destroying all signal at once


def cosine_betas(n: int) -> Tensor:
    """Nichol & Dhariwal's cosine schedule ("squaredcos_cap_v2"): abar(t) = cos^2((t/n + s)/(1 + s) pi/2)."""

    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / n) / abar(i / n), MAX_BETA) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(kind: str, n: int, start: float, end: float) -> Tensor:
    """``(n,)`` float32 betas of the named schedule."""
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float32)
    if kind == "squaredcos_cap_v2":
        return cosine_betas(n)
    raise ValueError(f"unknown beta schedule {kind!r}; expected one of {BETA_SCHEDULES}")


def _per_sample(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """``values[t]`` shaped ``(B, 1, 1, 1)`` in ``like``'s dtype and device, for broadcasting."""
    picked = values.to(like.device)[t.to(like.device).long()].to(like.dtype)
    return picked.view(-1, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """A discrete diffusion schedule of ``num_train_timesteps`` noise levels."""

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction_type: str = "epsilon", clip_sample: bool = True,
                 clip_sample_range: float = 1.0) -> None:  # fmt: skip
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTIONS}")
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type = prediction_type
        self.clip_sample, self.clip_sample_range = clip_sample, clip_sample_range
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)  # (N,) float32
        self.betas = betas.double()
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).double()  # product in float32, as diffusers

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> NoiseSchedule:
        return cls(config.num_train_timesteps, config.beta_schedule, config.beta_start, config.beta_end,
                   config.prediction_type, config.clip_sample, config.clip_sample_range)  # fmt: skip

    def abar(self, t: int) -> float:
        """``abar_t``; ``t = -1`` is "before any noise" (1.0)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample q(x_t | x_0): ``(B, C, H, W)`` clean images, noise of the same shape, ``(B,)`` steps."""
        a = _per_sample(self.alphas_cumprod, t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def velocity(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """The v-prediction target ``sqrt(abar) eps - sqrt(1 - abar) x_0``."""
        a = _per_sample(self.alphas_cumprod, t, x0)
        return a.sqrt() * noise - (1 - a).sqrt() * x0

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """What the denoiser is trained to output at these steps (noise or velocity)."""
        return noise if self.prediction_type == "epsilon" else self.velocity(x0, noise, t)

    def split(self, model_output: Tensor, sample: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """The model's output at step ``t`` as ``(x_0, eps)``, before any clipping."""
        a = self.abar(t)
        if self.prediction_type == "epsilon":
            return (sample - math.sqrt(1 - a) * model_output) / math.sqrt(a), model_output
        x0 = math.sqrt(a) * sample - math.sqrt(1 - a) * model_output
        return x0, math.sqrt(a) * model_output + math.sqrt(1 - a) * sample

    def clip(self, x0: Tensor) -> Tensor:
        return x0.clamp(-self.clip_sample_range, self.clip_sample_range) if self.clip_sample else x0

    def timesteps(self, steps: int, spacing: str = "leading") -> list[int]:
        """The ``steps`` training steps a sampler visits, from noisiest to cleanest.

        "leading": 0, k, 2k, ... (k = N // steps), reversed, the DDIM paper's choice; "trailing":
        N - 1 down in strides of N / steps, which starts at the pure-noise step (Lin et al. 2023).
        """
        n = self.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if steps > n:
            raise ValueError(
                f"steps={steps} is more than the {n} timesteps the model was trained with; "
                f"pass steps <= {n} (the schedule has no noise levels in between)"
            )
        if spacing == "leading":
            return [i * (n // steps) for i in range(steps)][::-1]
        if spacing == "trailing":
            ratio = n / steps
            return [round(n - i * ratio) - 1 for i in range(steps)]
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {SPACINGS}")
