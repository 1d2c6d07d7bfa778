"""Our schedule and samplers against diffusers' DDPMScheduler and DDIMScheduler, in float64.

Every timestep, both beta schedules, both predictions: ``add_noise``, the velocity, the timestep
lists and ``step``. The DDPM noise is the same tensor on both sides: diffusers draws it from a
generator seeded like the one that draws ours.

diffusers keeps ``alphas_cumprod`` as a float32 tensor, so its step does the scalar arithmetic
(square roots, ``1 - abar``) in float32 even on float64 samples, which cancellation at high noise
levels turns into ~5e-6 differences. The tests hand it float64 copies of its own (float32-built)
table, so both sides compute in float64 from the same noise levels.
"""

from __future__ import annotations

import pytest
import torch

from glassformer.models.diffusion.samplers import DDIMSampler, DDPMSampler
from glassformer.models.diffusion.schedule import NoiseSchedule

diffusers = pytest.importorskip("diffusers")

N = 1000
SHAPE = (2, 1, 3, 3)
TOL = dict(atol=1e-6, rtol=1e-6)
CASES = [(b, p) for b in ("linear", "squaredcos_cap_v2") for p in ("epsilon", "v_prediction")]


def _pair(beta: str, prediction: str, kind: str = "ddpm", **extra):
    ours = NoiseSchedule(N, beta, prediction_type=prediction)
    cls = diffusers.DDPMScheduler if kind == "ddpm" else diffusers.DDIMScheduler
    theirs = cls(num_train_timesteps=N, beta_schedule=beta, prediction_type=prediction, **extra)
    theirs.alphas_cumprod = theirs.alphas_cumprod.double()
    theirs.one = torch.tensor(1.0, dtype=torch.float64)
    if kind == "ddim":
        theirs.final_alpha_cumprod = theirs.final_alpha_cumprod.double()
    return ours, theirs


def _randn(seed: int) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("beta,prediction", CASES)
def test_add_noise_and_velocity_at_every_timestep(beta: str, prediction: str) -> None:
    ours, theirs = _pair(beta, prediction)
    t = torch.arange(N)
    x0, noise = (torch.randn(N, 1, 2, 2, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(ours.add_noise(x0, noise, t), theirs.add_noise(x0, noise, t), **TOL)
    torch.testing.assert_close(ours.velocity(x0, noise, t), theirs.get_velocity(x0, noise, t), **TOL)


def _assert_steps(got: list, want: list) -> None:
    """Every step's (x_prev, x_0) pair equal: compared at once, since one comparison costs more than a step."""
    for i in (0, 1):
        torch.testing.assert_close(torch.stack([g[i] for g in got]), torch.stack([w[i] for w in want]), **TOL)


@pytest.mark.parametrize("beta,prediction", CASES)
def test_ddpm_step_at_every_timestep(beta: str, prediction: str) -> None:
    ours, theirs = _pair(beta, prediction)
    sampler = DDPMSampler(ours)
    assert sampler.timesteps == list(range(N - 1, -1, -1))
    got, want = [], []
    for t in sampler.timesteps:
        sample, output = _randn(2 * t) * 2, _randn(2 * t + 1)
        want.append(theirs.step(output, t, sample, generator=torch.Generator().manual_seed(t), return_dict=False))
        step = sampler.step(output, t, sample, noise=_randn(t) if t > 0 else None)  # the draw theirs makes
        got.append((step.prev_sample, step.pred_original_sample))
    _assert_steps(got, want)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddpm_with_fewer_steps(spacing: str) -> None:
    ours, theirs = _pair("linear", "epsilon", timestep_spacing=spacing)
    theirs.set_timesteps(37)
    sampler = DDPMSampler(ours, 37, spacing)
    assert sampler.timesteps == theirs.timesteps.tolist()
    got, want = [], []
    for t in sampler.timesteps:
        sample, output = _randn(t), _randn(t + 1)
        want.append(theirs.step(output, t, sample, generator=torch.Generator().manual_seed(7), return_dict=False))
        step = sampler.step(output, t, sample, noise=_randn(7) if t > 0 else None)
        got.append((step.prev_sample, step.pred_original_sample))
    _assert_steps(got, want)


DDIM = [(b, p, s, n) for b, p in CASES for s in ("leading", "trailing") for n in (7, 50)]


@pytest.mark.parametrize("beta,prediction,spacing,steps", DDIM)
def test_ddim_step_matches(beta: str, prediction: str, spacing: str, steps: int) -> None:
    for eta, alpha_to_one in ((0.0, True), (0.7, False)):
        ours, theirs = _pair(beta, prediction, "ddim", timestep_spacing=spacing, set_alpha_to_one=alpha_to_one)
        theirs.set_timesteps(steps)
        sampler = DDIMSampler(ours, steps, spacing, eta=eta, set_alpha_to_one=alpha_to_one)
        assert sampler.timesteps == theirs.timesteps.tolist()
        got, want = [], []
        for t in sampler.timesteps:
            sample, output, noise = _randn(t), _randn(t + 1), _randn(t + 2)
            want.append(theirs.step(output, t, sample, eta=eta, variance_noise=noise, return_dict=False))
            step = sampler.step(output, t, sample, noise=noise)
            got.append((step.prev_sample, step.pred_original_sample))
        _assert_steps(got, want)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_with_the_noise_of_the_clipped_x0_matches(prediction: str) -> None:
    """use_clipped_model_output: outputs large enough that x_0 is clipped at most steps."""
    ours, theirs = _pair("linear", prediction, "ddim")
    theirs.set_timesteps(20)
    sampler = DDIMSampler(ours, 20, use_clipped_model_output=True)
    plain = DDIMSampler(ours, 20)
    got, want, differs = [], [], 0
    for t in sampler.timesteps:
        sample, output = _randn(t) * 3, _randn(t + 1) * 3
        want.append(theirs.step(output, t, sample, use_clipped_model_output=True, return_dict=False))
        step = sampler.step(output, t, sample)
        got.append((step.prev_sample, step.pred_original_sample))
        differs += not torch.allclose(step.prev_sample, plain.step(output, t, sample).prev_sample)
    _assert_steps(got, want)
    assert differs > len(sampler.timesteps) // 2  # the option changed the steps it is about


def test_ddim_with_every_training_step_is_allowed_and_more_is_refused() -> None:
    schedule = NoiseSchedule(N)
    assert len(DDIMSampler(schedule, N).timesteps) == N
    with pytest.raises(ValueError, match=r"steps=1001 is more than the 1000 timesteps.*steps <= 1000"):
        DDIMSampler(schedule, N + 1)
    with pytest.raises(ValueError, match="steps=2000 is more than"):
        DDPMSampler(schedule, 2000)


def test_a_step_that_needs_noise_says_so() -> None:
    sampler = DDPMSampler(NoiseSchedule(N))
    with pytest.raises(ValueError, match="pass noise="):
        sampler.step(_randn(0), 10, _randn(1))
    with pytest.raises(ValueError, match="unknown timestep spacing 'linspace'"):
        NoiseSchedule(N).timesteps(10, "linspace")
