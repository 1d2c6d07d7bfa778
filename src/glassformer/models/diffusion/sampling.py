"""Images from a trained denoiser: the sampling loop, classifier-free guidance, EMA weights.

``sample(model, n, steps=50, sampler="ddim", guidance=3, labels="sandal", seed=0)`` starts from
Gaussian noise and applies the sampler's step at each of its timesteps. All randomness (x_T, and
the fresh noise of DDPM or of DDIM with ``eta > 0``) is drawn on the CPU from one generator seeded
with ``seed`` and then moved to the model's device, so the same seed gives the same images on a
CPU and on a GPU up to float rounding. (diffusers draws on the device by default, and CUDA's random
stream differs from the CPU's: the same seed there gives different images per device.)

Guidance follows Ho & Salimans (2022): ``out = out_c + w (out_c - out_u)``, where ``out_u`` is the
prediction for the null class; ``w = 0`` is plain conditional sampling. (diffusers' pipelines call
``1 + w`` the guidance scale.) Both branches run as one batch of ``2n``.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from glassformer.models.diffusion.diffusers_io import from_diffusers
from glassformer.models.diffusion.samplers import DDIMSampler, DDPMSampler
from glassformer.models.diffusion.unet import DiffusionUNet
from glassformer.utils.suggest import did_you_mean
from glassformer.utils.weights import load_into, read_safetensors

SAMPLERS: tuple[str, ...] = ("ddim", "ddpm")
EMA_WEIGHTS = "ema.safetensors"  # what the training engine writes beside a checkpoint's model.safetensors
Labels = int | str | Sequence[int | str] | Tensor | None


@dataclass
class Samples:
    """What :func:`sample` returns; images are float32 on the CPU, in [-1, 1]."""

    images: Tensor  # (n, C, H, W)
    labels: Tensor | None  # (n,) class ids, None when unconditional
    timesteps: list[int]  # the training steps visited, noisiest first
    trajectory: Tensor | None = None  # (S + 1, n, C, H, W): x_T, then the sample after each step
    predictions: Tensor | None = None  # (S, n, C, H, W): the model's clipped x_0 guess at each step


def class_ids(model: DiffusionUNet, labels: Labels, n: int) -> Tensor | None:
    """``labels`` (one class or ``n``; ids or names) as ``(n,)`` ids; None stays None."""
    cfg = model.config
    if labels is None:
        return None
    if cfg.n_classes == 0:
        raise ValueError("this diffusion model is unconditional (n_classes=0): sample it without labels")
    if isinstance(labels, Tensor):
        labels = labels.tolist()
    items = [labels] if isinstance(labels, (int, str)) else list(labels)
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise ValueError(f"got {len(items)} labels for n={n} images; give one label or one per image")
    return torch.tensor([_class_id(cfg.class_names, cfg.n_classes, item) for item in items], dtype=torch.long)


def _class_id(names: tuple[str, ...], n_classes: int, item: int | str) -> int:
    if isinstance(item, str) and not item.isdigit():
        if item not in names:
            known = ", ".join(names) if names else "none (this model's classes have no names; use ids)"
            raise ValueError(f"unknown class {item!r}{did_you_mean(item, names)}; the classes are: {known}")
        return names.index(item)
    index = int(item)
    if not 0 <= index < n_classes:
        raise ValueError(f"class id {index} is out of range: this model has classes 0..{n_classes - 1}")
    return index


def _check_request(model: DiffusionUNet, n: int, seed: object, guidance: float | None,
                   ids: Tensor | None, sampler: str, eta: float) -> None:  # fmt: skip
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r} ({type(seed).__name__})")
    if not -(2**63) <= int(seed) < 2**64:
        raise ValueError(f"seed={seed} does not fit torch's 64-bit generator seed; use one in [0, 2**63)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (how many images), got {n!r}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}{did_you_mean(sampler, SAMPLERS)}; expected one of {SAMPLERS}")
    if sampler == "ddpm" and eta != 0.0:
        raise ValueError("eta belongs to DDIM (DDPM's noise is fixed by its schedule); drop eta or use sampler='ddim'")
    if guidance is None:
        return
    if model.config.n_classes == 0:
        raise ValueError(
            "guidance needs a class-conditional model trained with a null class; this one is unconditional "
            "(n_classes=0): drop guidance"
        )
    if ids is None:
        raise ValueError("guidance steers towards a class: pass labels= (ids or names) with it")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or guidance < 0:
        raise ValueError(f"guidance must be a number >= 0 (0: plain conditional sampling), got {guidance!r}")


def _guided(model: DiffusionUNet, x: Tensor, t: int, ids: Tensor | None, guidance: float | None) -> Tensor:
    """The denoiser's output at step ``t``, steered by classifier-free guidance when asked."""
    if guidance is None or guidance == 0:
        return model.denoise(x, t, ids)
    null = torch.full_like(ids, model.config.null_class)
    both = model.denoise(torch.cat([x, x]), t, torch.cat([ids, null]))  # (2n, C, H, W)
    cond, uncond = both.chunk(2)
    return cond + guidance * (cond - uncond)


@torch.no_grad()
def sample(model: DiffusionUNet, n: int, *, steps: int | None = None, sampler: str = "ddim",
           guidance: float | None = None, labels: Labels = None, seed: int = 0, eta: float = 0.0,
           spacing: str = "leading", use_clipped_model_output: bool = True,
           return_trajectory: bool = False) -> Samples:  # fmt: skip
    """``n`` images from ``model`` (``steps``: 50 for DDIM, the training schedule's all for DDPM).

    ``labels``: one class or one per image, as ids or names (``model.config.class_names``); None
    samples a conditional model unconditionally (its null class). ``guidance``: the weight ``w``
    above (needs labels). ``eta``: DDIM's noise. ``spacing``: "leading" or "trailing" timesteps.
    ``use_clipped_model_output``: DDIM's noise re-derived from the clipped x_0 (see ``DDIMSampler``).
    On by default here, unlike diffusers' scheduler: with the noise the model gave beside a clipped
    x_0, every clipped step feeds the over-range part of the guess back in, and guided samples
    saturate (``bench/diffusion.py`` measured DDIM-50 at guidance 3 at 20% judge accuracy that way,
    99.8% with the consistent pair). Pass False to reproduce diffusers' default step.
    ``return_trajectory``: keep every intermediate sample and x_0 guess (for strips and GIFs).
    """
    ids = class_ids(model, labels, n) if isinstance(n, int) and not isinstance(n, bool) else None
    _check_request(model, n, seed, guidance, ids, sampler, eta)
    schedule = model.schedule
    if sampler == "ddim":
        stepper: DDIMSampler | DDPMSampler = DDIMSampler(
            schedule, 50 if steps is None else steps, spacing, eta=eta, use_clipped_model_output=use_clipped_model_output
        )
    else:
        stepper = DDPMSampler(schedule, steps, spacing)
    cfg, param = model.config, model.conv_in.weight
    generator = torch.Generator().manual_seed(int(seed))
    shape = (n, cfg.in_channels, cfg.image_size, cfg.image_size)
    x = torch.randn(shape, generator=generator).to(device=param.device, dtype=param.dtype)  # x_T
    ids = ids.to(param.device) if ids is not None else None
    frames, guesses = [x.float().cpu()], []
    was_training = model.training
    model.eval()
    try:
        for t in stepper.timesteps:
            out = _guided(model, x, t, ids, guidance)
            noise = torch.randn(shape, generator=generator).to(x) if stepper.needs_noise(t) else None
            step = stepper.step(out, t, x, noise=noise)
            x = step.prev_sample
            if return_trajectory:
                frames.append(x.float().cpu())
                guesses.append(step.pred_original_sample.float().cpu())
    finally:
        model.train(was_training)
    return Samples(
        images=x.float().cpu().clamp(-1, 1), labels=None if ids is None else ids.cpu(), timesteps=stepper.timesteps,
        trajectory=torch.stack(frames) if return_trajectory else None,
        predictions=torch.stack(guesses) if return_trajectory else None,
    )  # fmt: skip


def load_for_sampling(source: str | os.PathLike[str], *, ema: bool = True, map_location: str = "cpu") -> DiffusionUNet:
    """A diffusion model from a glassformer folder (a training checkpoint or ``best/``) or a diffusers
    UNet folder. With ``ema`` (the default) a checkpoint's ``ema.safetensors``, the averaged weights
    the training engine keeps beside ``model.safetensors``, replaces the raw weights: diffusion models
    sample markedly better from the average. (A ``best/`` folder chosen on an ``ema_`` metric already
    holds the averaged weights as its model.)"""
    folder = Path(source)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; pass a model folder, e.g. out/<run>/best or out/<run>/checkpoints/step-00010000"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("_class_name") == "UNet2DModel":
        model = from_diffusers(folder)
    else:
        model = DiffusionUNet.load(folder, map_location=map_location)
    averaged = folder / EMA_WEIGHTS
    if ema and averaged.is_file():
        load_into(model, read_safetensors(averaged, device=map_location), source=str(averaged))
    return model.to(map_location).eval()
