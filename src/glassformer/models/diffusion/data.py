"""``glassformer train ddpm-fashion``'s data: Fashion-MNIST padded to 32x32 and scaled to [-1, 1].

The denoiser learns images in [-1, 1] (the range the samplers clip ``x_0`` to); the 2-pixel black
border brings 28x28 to a size the UNet can halve three times, and is what Fashion-MNIST's own
background already is. A slice of the training set, fixed by ``seed``, is held out for the
engine's evaluation loss; the test set stays untouched for the benchmark's Frechet distance.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from glassformer.data.images import load_fashion_mnist, train_val_split
from glassformer.models.diffusion.config import DiffusionConfig
from glassformer.registry import DataRequest
from glassformer.utils.config import unknown_keys_message

OPTIONS = ("root", "val_fraction", "seed")


def to_model_range(images: Tensor, size: int) -> Tensor:
    """uint8 ``(N, H, W)`` -> float ``(N, 1, size, size)`` in [-1, 1], padded with black around the centre."""
    n, h, w = images.shape
    if h > size or w > size:
        raise ValueError(f"images are {h}x{w} but the model is {size}x{size}; use a model with image_size >= {max(h, w)}")
    top, left = (size - h) // 2, (size - w) // 2
    x = images.float().div(127.5).sub(1.0).unsqueeze(1)  # (N, 1, H, W)
    return F.pad(x, (left, size - w - left, top, size - h - top), value=-1.0)


class ImageDataset:
    """Map-style: item ``i`` is ``{"pixel_values": (1, S, S), "labels": ()}`` (labels only when conditional)."""

    def __init__(self, images: Tensor, labels: Tensor | None) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"pixel_values": self.images[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def build_fashion_data(train_config: Any, model_config: DiffusionConfig, request: DataRequest) -> tuple[ImageDataset, ImageDataset]:
    """Training and held-out Fashion-MNIST images. Options (``data.KEY=VALUE``): ``root`` (the IDX
    files' folder), ``val_fraction`` (0.02) and ``seed`` (0) of the held-out slice."""
    options = dict(request.options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError("unknown data option: " + unknown_keys_message(unknown, list(OPTIONS), "Fashion-MNIST data"))
    if model_config.in_channels != 1:
        raise ValueError(f"Fashion-MNIST is greyscale: the model needs in_channels=1, not {model_config.in_channels}")
    if model_config.n_classes not in (0, 10):
        raise ValueError(f"Fashion-MNIST has 10 classes; the model has n_classes={model_config.n_classes} (use 10, or 0)")
    images, labels = load_fashion_mnist("train", options.get("root"))
    pixels = to_model_range(images, model_config.image_size)
    train_idx, val_idx = train_val_split(len(labels), float(options.get("val_fraction", 0.02)), int(options.get("seed", 0)))

    def part(idx: Tensor) -> ImageDataset:
        return ImageDataset(pixels[idx], labels[idx] if model_config.n_classes else None)

    return part(train_idx), part(val_idx)
