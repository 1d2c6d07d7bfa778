"""Images in [-1, 1] as pictures: a grid of samples, written as PNG through Pillow (matplotlib's own
image library, so it is always installed)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = grid(images, nrow)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    picture.save(path)
    return path
