"""Images in [-1, 1] as pictures: a grid of samples, a denoising strip, an animated GIF.

Written through Pillow (matplotlib's own image library, so it is always installed). The strip and
the GIF read a :class:`~glassformer.models.diffusion.sampling.Samples` made with
``return_trajectory=True``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from glassformer.models.diffusion.sampling import Samples


def to_uint8(images: Tensor) -> Tensor:
    """``(n, C, H, W)`` in [-1, 1] -> ``(n, H, W, C)`` bytes."""
    if images.dim() != 4:
        raise ValueError(f"expected images of shape (n, channels, height, width), got {tuple(images.shape)}")
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> Image.Image:
    """The images tiled ``nrow`` per row (default: a near-square grid), ``pad`` black pixels apart."""
    pixels = to_uint8(images)  # (n, H, W, C)
    n, h, w, c = pixels.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = torch.zeros(rows * (h + pad) + pad, cols * (w + pad) + pad, c, dtype=torch.uint8)
    for i in range(n):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        canvas[top : top + h, left : left + w] = pixels[i]
    array = canvas.numpy()
    return Image.fromarray(array[..., 0] if c == 1 else array, mode="L" if c == 1 else "RGB")


def save_grid(images: Tensor, path: str | os.PathLike[str], nrow: int | None = None, scale: int = 1) -> Path:
    """Write :func:`grid` as a PNG, each pixel ``scale`` times wider (small images read better enlarged)."""
    picture = grid(images, nrow)
    return _save(picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST), path)


def _trajectory(samples: Samples) -> tuple[Tensor, Tensor]:
    if samples.trajectory is None or samples.predictions is None:
        raise ValueError("these samples hold no trajectory: sample them with return_trajectory=True")
    return samples.trajectory, samples.predictions


def strip(samples: Samples, index: int = 0, frames: int = 10) -> Image.Image:
    """Image ``index`` from x_T to x_0 in ``frames`` snapshots (top) with the model's x_0 guess from
    each (bottom): the guess sharpens long before the sample itself stops looking like noise."""
    trajectory, predictions = _trajectory(samples)
    steps = predictions.shape[0]
    if not 0 <= index < trajectory.shape[1]:
        raise ValueError(f"index {index} is out of range: the samples hold {trajectory.shape[1]} images")
    picked = torch.linspace(0, steps - 1, min(frames, steps)).round().long()  # steps whose input and guess we show
    tiles = torch.cat([trajectory[picked, index], predictions[picked, index]])  # (2 * frames, C, H, W)
    return grid(tiles, nrow=len(picked))


def save_strip(samples: Samples, path: str | os.PathLike[str], index: int = 0, frames: int = 10,
               scale: int = 4) -> Path:  # fmt: skip
    """Write :func:`strip` as a PNG, each pixel ``scale`` times wider."""
    picture = strip(samples, index, frames)
    return _save(picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST), path)


def save_gif(samples: Samples, path: str | os.PathLike[str], nrow: int | None = None, scale: int = 4,
             frame_ms: int = 80, hold_ms: int = 1500) -> Path:  # fmt: skip
    """Every step of the whole batch as an animated GIF (the last frame held for ``hold_ms``)."""
    trajectory, _ = _trajectory(samples)
    pictures = [grid(x, nrow) for x in trajectory]
    pictures = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in pictures]
    durations = [frame_ms] * (len(pictures) - 1) + [hold_ms]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path


def _save(picture: Image.Image, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
