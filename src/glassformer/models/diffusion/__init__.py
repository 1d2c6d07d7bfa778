"""Diffusion: a class-conditional UNet denoiser with DDPM and DDIM sampling (Fashion-MNIST sized).

``DiffusionUNet`` and ``DiffusionConfig`` (``config.py``) hold the network and the noise schedule it
was trained on; ``schedule.py`` is the forward process, ``samplers.py`` the reverse steps (equal
to diffusers' ``DDPMScheduler`` and ``DDIMScheduler``), ``sampling.sample`` the loop with
classifier-free guidance, and ``diffusers_io`` reads and writes diffusers' ``UNet2DModel`` folders.
``FAMILY`` declares the presets (each with a ``-tiny`` twin) and the diffusers format.
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.models.diffusion.config import FASHION_CLASSES, DiffusionConfig, ddpm_fashion, tiny
from glassformer.models.diffusion.sampling import Samples, load_for_sampling, sample
from glassformer.models.diffusion.unet import DiffusionUNet
from glassformer.registry import Family, Format

__all__ = ["FAMILY", "FASHION_CLASSES", "DiffusionConfig", "DiffusionUNet", "Samples", "example_batch",
           "load_for_sampling", "sample"]  # fmt: skip


def example_batch(config: DiffusionConfig, batch_size: int = 2) -> dict[str, Any]:
    """Random images in [-1, 1] (and class ids, for a conditional model): the training loss's input."""
    size = config.image_size
    batch: dict[str, Any] = {"pixel_values": torch.rand(batch_size, config.in_channels, size, size) * 2 - 1}
    if config.n_classes:
        batch["labels"] = torch.randint(0, config.n_classes, (batch_size,))
    return batch


FAMILY = Family(
    name="diffusion",
    model=DiffusionUNet,
    config=DiffusionConfig,
    presets={"ddpm-fashion": (ddpm_fashion, "class-conditional DDPM UNet for 32x32 Fashion-MNIST (0.7M, 2x2 stem)")},
    tiny=tiny,
    example_batch=example_batch,
    data={"ddpm-fashion": "glassformer.models.diffusion.data:build_fashion_data"},
    default_preset="ddpm-fashion",
    formats=(
        Format("diffusers", load="glassformer.models.diffusion.diffusers_io:from_diffusers",
               save="glassformer.models.diffusion.diffusers_io:save_diffusers",
               exports="glassformer.models.diffusion.diffusers_io:architecture"),
    ),
    cli="glassformer.models.diffusion.cli",
)
