"""The Vision Transformer family: image classifiers (and an image tower for CLIP).

``ViT`` and ``ViTConfig`` cover ViT-Ti/S/B shapes and the small ``vit-fashion`` model that the
Fashion-MNIST experiment trains; ``patchify`` is the patch embedding written as unfold + linear.
``hf.from_pretrained`` / ``hf.save_pretrained`` read and write Hugging Face's ``ViTModel`` and
``ViTForImageClassification``. ``baseline.CNNBaseline`` is the ResNet-style CNN the benchmark
compares with (not a preset). ``FAMILY`` declares the presets, each with a ``-tiny`` twin.
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.models.vit import config as _cfg
from glassformer.models.vit.config import FASHION_MNIST_CLASSES, ViTConfig
from glassformer.models.vit.model import ViT, classification_loss, interpolate_positions, patchify
from glassformer.registry import Family, Format

__all__ = [
    "FAMILY", "FASHION_MNIST_CLASSES", "ViT", "ViTConfig", "classification_loss", "example_batch",
    "interpolate_positions", "patchify",
]  # fmt: skip


def example_batch(config: ViTConfig, batch_size: int = 2) -> dict[str, Any]:
    """Random normalised images of the configured size, with class ids when the model has a head."""
    g = torch.Generator().manual_seed(0)
    shape = (batch_size, config.in_channels, config.image_size, config.image_size)
    batch: dict[str, Any] = {"pixel_values": torch.randn(shape, generator=g)}
    if config.num_labels:
        batch["labels"] = torch.randint(0, config.num_labels, (batch_size,), generator=g)
    return batch


FAMILY = Family(
    name="vit",
    model=ViT,
    config=ViTConfig,
    presets={
        "vit-fashion": (_cfg.vit_fashion, "ViT for 28x28 Fashion-MNIST: 7x7 patches, 6 blocks of width 128, 4 heads (0.8M)"),
        "vit-ti16": (_cfg.vit_ti16, "ViT-Ti/16 shape: 224x224, 16x16 patches, width 192, 12 blocks, 3 heads (5.7M)"),
        "vit-s16": (_cfg.vit_s16, "ViT-S/16 shape: 224x224, 16x16 patches, width 384, 12 blocks, 6 heads (22M)"),
        "vit-b16": (_cfg.vit_b16, "ViT-B/16 shape (google/vit-base-patch16-224): width 768, 12 blocks (86M)"),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    generation=None,
    data={"vit-fashion": "glassformer.data.images:fashion_mnist_data"},
    default_preset="vit-fashion",
    formats=(
        Format("huggingface", load="glassformer.models.vit.hf:from_pretrained",
               save="glassformer.models.vit.hf:save_pretrained", exports="glassformer.models.vit.hf:architecture",
               model_types=("vit",)),
    ),  # fmt: skip
)
