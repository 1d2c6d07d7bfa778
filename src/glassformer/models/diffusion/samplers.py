"""The reverse process: DDPM's ancestral step and DDIM's step, one noise level at a time.

Both take the denoiser's raw output at step ``t`` and the current sample ``x_t`` and return
``x_prev`` with the model's clipped ``x_0`` prediction (the picture under each frame of a
denoising strip). Randomness comes in only through ``noise``, a tensor the caller draws, so the
same noise gives the same step here and in ``diffusers`` (its ``DDPMScheduler`` draws the same
tensor from a generator seeded the same way).

* DDPM (Ho et al. 2020), variance "fixed_small": ``x_prev ~ N(mu(x_t, x_0), beta~_t)`` with the
  posterior mean ``mu = sqrt(abar_prev) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_prev) /
  (1 - abar_t) x_t`` and ``beta~_t = (1 - abar_prev) / (1 - abar_t) beta_t``; ``alpha_t`` is
  ``abar_t / abar_prev``, so a shortened schedule (fewer steps) stays a valid Markov chain.
* DDIM (Song et al. 2021): ``x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps +
  sigma z`` with ``sigma = eta sqrt(beta~_t)``: eta 0 is deterministic, eta 1 is DDPM's variance.
  The previous step is ``t - N // steps`` and ``abar`` before step 0 is 1 (``set_alpha_to_one``)
  or ``abar_0``, as diffusers' ``DDIMScheduler``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from glassformer.models.diffusion.schedule import NoiseSchedule

MIN_VARIANCE = 1e-20  # diffusers clamps the DDPM variance here (it takes its log in other variants)


@dataclass
class Step:
    """One reverse step: the less noisy sample and the model's (clipped) guess of the clean image."""

    prev_sample: Tensor
    pred_original_sample: Tensor


def _need_noise(noise: Tensor | None, sample: Tensor, who: str) -> Tensor:
    if noise is None:
        raise ValueError(f"{who} draws fresh noise at this step: pass noise= (a tensor shaped like the sample)")
    if noise.shape != sample.shape:
        raise ValueError(f"{who}: noise has shape {tuple(noise.shape)} but the sample is {tuple(sample.shape)}")
    return noise.to(sample.dtype)


class DDPMSampler:
    """Ancestral sampling over ``steps`` of the schedule's steps (all of them by default)."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, spacing: str = "leading") -> None:
        self.schedule = schedule
        self.timesteps = schedule.timesteps(schedule.num_train_timesteps if steps is None else steps, spacing)

    def previous(self, t: int) -> int:
        """The step after ``t`` in this sampler's list, -1 after the last."""
        i = self.timesteps.index(t)
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def needs_noise(self, t: int) -> bool:
        return t > 0

    def step(self, model_output: Tensor, t: int, sample: Tensor, noise: Tensor | None = None) -> Step:
        s = self.schedule
        a_t, a_prev = s.abar(t), s.abar(self.previous(t))
        alpha_t = a_t / a_prev
        beta_t = 1 - alpha_t
        x0 = s.clip(s.split(model_output, sample, t)[0])
        mean = (math.sqrt(a_prev) * beta_t / (1 - a_t)) * x0 + (math.sqrt(alpha_t) * (1 - a_prev) / (1 - a_t)) * sample
        if not self.needs_noise(t):
            return Step(mean, x0)
        variance = max((1 - a_prev) / (1 - a_t) * beta_t, MIN_VARIANCE)
        return Step(mean + math.sqrt(variance) * _need_noise(noise, sample, "DDPM"), x0)


class DDIMSampler:
    """DDIM over ``steps`` steps; ``eta`` scales the fresh noise (0: deterministic).

    ``use_clipped_model_output`` (diffusers' name): when the schedule clips the predicted x_0, derive
    the noise from the clipped x_0 too, ``eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)``, so the
    next sample is built from one consistent pair. Off by default, as in diffusers: the step then mixes
    the clipped x_0 with the model's own noise, which an imperfect model at high noise levels makes
    disagree."""

    def __init__(self, schedule: NoiseSchedule, steps: int, spacing: str = "leading", eta: float = 0.0,
                 set_alpha_to_one: bool = True, use_clipped_model_output: bool = False) -> None:  # fmt: skip
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not 0.0 <= eta:
            raise ValueError(f"eta must be a number >= 0 (0: deterministic DDIM, 1: DDPM's variance), got {eta!r}")
        self.schedule = schedule
        self.timesteps = schedule.timesteps(steps, spacing)
        self.stride = schedule.num_train_timesteps // steps
        self.eta = float(eta)
        self.final_abar = 1.0 if set_alpha_to_one else schedule.abar(0)
        self.use_clipped_model_output = bool(use_clipped_model_output)

    def previous(self, t: int) -> int:
        return t - self.stride

    def needs_noise(self, t: int) -> bool:
        return self.eta > 0

    def step(self, model_output: Tensor, t: int, sample: Tensor, noise: Tensor | None = None) -> Step:
        s = self.schedule
        prev = self.previous(t)
        a_t = s.abar(t)
        a_prev = s.abar(prev) if prev >= 0 else self.final_abar
        x0, eps = s.split(model_output, sample, t)
        x0 = s.clip(x0)
        if self.use_clipped_model_output:
            eps = (sample - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        prev_sample = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if self.needs_noise(t):
            prev_sample = prev_sample + sigma * _need_noise(noise, sample, "DDIM with eta > 0")
        return Step(prev_sample, x0)
