"""Training augmentation for image batches, in torch (no torchvision), seeded and vectorised.

Every transform is a callable ``t(images, generator) -> images`` on float images in ``[0, 1]`` of
shape ``(B, C, H, W)`` (a single ``(C, H, W)`` image is accepted and returned as such). Each
sample gets its own random parameters, but they are drawn for the whole batch at once from the
explicit ``torch.Generator``, so the same generator state gives the same output and no transform
touches the global RNG. The work is batched tensor code: the Python loop runs over the few
operations of a policy, never over the images, which is what keeps a 60k-image epoch of 28x28
Fashion-MNIST cheap on two CPU cores.

- :class:`RandomCrop` (zero padding, then a random window) and :class:`RandomHorizontalFlip`, the
  classic CIFAR/Fashion-MNIST pair;
- :class:`RandAugmentLite`, RandAugment (Cubuk et al. 2020) over a short list of operations:
  ``n_ops`` operations per image, each at the fixed ``magnitude`` (0-10) with a random sign;
- :func:`mixup` (Zhang et al. 2018) and :func:`cutmix` (Yun et al. 2019) on a batch, returning soft
  labels of shape ``(B, n_classes)``; :class:`RandomMix` picks one of the two per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from glassformer.utils.suggest import did_you_mean

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _as_batch(images: Tensor, who: str) -> tuple[Tensor, bool]:
    """``(B, C, H, W)`` float images and whether the input was a single ``(C, H, W)`` image."""
    if not isinstance(images, Tensor) or images.dim() not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{who}: expected images of shape (B, C, H, W) or (C, H, W), got {shape}")
    if not images.is_floating_point():
        raise ValueError(
            f"{who}: expected float images in [0, 1], got dtype {images.dtype}; convert uint8 images with "
            "glassformer.data.images.to_tensor (or images.float() / 255) first"
        )
    single = images.dim() == 3
    return (images.unsqueeze(0) if single else images), single


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        for t in self.transforms:
            images = t(images, generator)
        return images

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomCrop:
    """Pad each side with ``padding`` zeros, then cut a random ``size`` x ``size`` window per image."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if padding < 0 or min(self.size) <= 0:
            raise ValueError(f"RandomCrop: size must be positive and padding >= 0, got size={size}, padding={padding}")
        self.padding = padding

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x, single = _as_batch(images, "RandomCrop")
        b, _, h, w = x.shape
        p, (ch, cw) = self.padding, self.size
        if ch > h + 2 * p or cw > w + 2 * p:
            raise ValueError(f"RandomCrop: a {ch}x{cw} crop does not fit {h}x{w} images padded by {p}")
        padded = F.pad(x, (p, p, p, p)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
        top = torch.randint(0, h + 2 * p - ch + 1, (b,), generator=generator)
        left = torch.randint(0, w + 2 * p - cw + 1, (b,), generator=generator)
        rows = (top[:, None] + torch.arange(ch))[:, :, None]  # (B, ch, 1)
        cols = (left[:, None] + torch.arange(cw))[:, None, :]  # (B, 1, cw)
        out = padded[torch.arange(b)[:, None, None], rows, cols].permute(0, 3, 1, 2)  # (B, C, ch, cw)
        return out[0] if single else out.contiguous()

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x, single = _as_batch(images, "RandomHorizontalFlip")
        flip = torch.rand(x.shape[0], generator=generator) < self.p  # (B,)
        out = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return out[0] if single else out

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


# --- RandAugment-lite ------------------------------------------------------------------------------
# Geometric ops give per-image affine maps (N, 2, 3) (output -> input coordinates in [-1, 1]), so a
# round of RandAugment resamples every image once, whatever op it drew; the others are pixel ops
# (images (N, C, H, W), signed level (N,) in [-1, 1], generator) -> images.

def _theta_translate(axis: int) -> Callable[[Tensor], Tensor]:
    def theta(level: Tensor) -> Tensor:
        t = torch.eye(2, 3).repeat(level.shape[0], 1, 1)
        t[:, axis, 2] = -2.0 * 0.25 * level  # up to a quarter of the image; grid units span 2
        return t
    return theta


def _theta_rotate(level: Tensor) -> Tensor:
    angle = level * math.radians(30.0)
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    return torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (N, 2, 3)


def _theta_shear(axis: int) -> Callable[[Tensor], Tensor]:
    def theta(level: Tensor) -> Tensor:
        t = torch.eye(2, 3).repeat(level.shape[0], 1, 1)
        t[:, axis, 1 - axis] = 0.3 * level
        return t
    return theta


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample ``x`` (N, C, H, W) through ``theta`` (N, 2, 3), bilinear, zeros outside.

    The grid is built here rather than by ``F.affine_grid``, which costs more than the sampling
    itself on small images; it is the same grid (pixel centres, ``align_corners=False``).
    """
    _, _, h, w = x.shape
    ys = (torch.arange(h, dtype=x.dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=x.dtype) * 2 + 1) / w - 1
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (H, W, 2) as (x, y)
    grid = torch.einsum("hwk,nik->nhwi", base, theta[:, :, :2].to(x.dtype)) + theta[:, None, None, :, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _brightness(x: Tensor, level: Tensor, generator: torch.Generator) -> Tensor:
    return (x * (1.0 + 0.9 * level)[:, None, None, None]).clamp(0.0, 1.0)


def _contrast(x: Tensor, level: Tensor, generator: torch.Generator) -> Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return (mean + (x - mean) * (1.0 + 0.9 * level)[:, None, None, None]).clamp(0.0, 1.0)


def _erase(x: Tensor, level: Tensor, generator: torch.Generator) -> Tensor:
    """Zero a rectangle of up to half the height and width (the level's size, not its sign), at a random place."""
    n, _, h, w = x.shape
    half_h, half_w = level.abs() * h / 4, level.abs() * w / 4  # (N,)
    cy, cx = _uniform(n, 0, h, generator), _uniform(n, 0, w, generator)
    ys = torch.arange(h, dtype=x.dtype) + 0.5
    xs = torch.arange(w, dtype=x.dtype) + 0.5
    inside_y = (ys[None] - cy[:, None]).abs() < half_h[:, None]  # (N, H)
    inside_x = (xs[None] - cx[:, None]).abs() < half_w[:, None]  # (N, W)
    mask = inside_y[:, :, None] & inside_x[:, None, :]  # (N, H, W)
    return x.masked_fill(mask[:, None], 0.0)


AFFINE_OPS: dict[str, Callable[[Tensor], Tensor]] = {
    "translate_x": _theta_translate(0),
    "translate_y": _theta_translate(1),
    "rotate": _theta_rotate,
    "shear_x": _theta_shear(0),
    "shear_y": _theta_shear(1),
}
PIXEL_OPS: dict[str, Callable[[Tensor, Tensor, torch.Generator], Tensor]] = {
    "brightness": _brightness,
    "contrast": _contrast,
    "erase": _erase,
}
RANDAUGMENT_OPS = (*AFFINE_OPS, *PIXEL_OPS)


class RandAugmentLite:
    """RandAugment over :data:`RANDAUGMENT_OPS`: ``n_ops`` uniformly chosen ops per image at ``magnitude``.

    ``magnitude`` runs 0-10 (RandAugment's scale; 10 = the strongest setting of each op: a quarter of
    the image shifted, 30 degrees, shear 0.3, brightness or contrast x(1 +- 0.9), an erased
    rectangle of half the sides). Each image draws its own ops and a sign per op. Per round, the
    images that drew a geometric op are resampled together once, and each pixel op runs once on
    the images that drew it.
    """

    def __init__(self, n_ops: int = 2, magnitude: float = 9.0, ops: Sequence[str] | None = None) -> None:
        if n_ops < 0 or not 0.0 <= magnitude <= 10.0:
            raise ValueError(f"RandAugmentLite: need n_ops >= 0 and magnitude in [0, 10], got {n_ops}, {magnitude}")
        names = list(ops) if ops is not None else list(RANDAUGMENT_OPS)
        for name in names:
            if name not in RANDAUGMENT_OPS:
                raise ValueError(
                    f"RandAugmentLite: unknown op {name!r}{did_you_mean(name, RANDAUGMENT_OPS)}; "
                    f"choose from {', '.join(RANDAUGMENT_OPS)}"
                )
        if not names:
            raise ValueError("RandAugmentLite: ops is empty; name at least one of " + ", ".join(RANDAUGMENT_OPS))
        self.n_ops, self.magnitude, self.ops = n_ops, float(magnitude), names

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x, single = _as_batch(images, "RandAugmentLite")
        for _ in range(self.n_ops):
            x = self._round(x, generator)
        return x[0] if single else x

    def _round(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b = x.shape[0]
        choice = torch.randint(0, len(self.ops), (b,), generator=generator)  # (B,)
        sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        level = sign * self.magnitude / 10.0  # (B,)
        theta = torch.eye(2, 3).repeat(b, 1, 1)  # (B, 2, 3)
        geometric = torch.zeros(b, dtype=torch.bool)
        for j, name in enumerate(self.ops):
            if name in AFFINE_OPS and bool((picked := choice == j).any()):
                theta[picked] = AFFINE_OPS[name](level[picked])
                geometric |= picked
        x = x.clone()
        if bool(geometric.any()):
            x[geometric] = _affine(x[geometric], theta[geometric])
        for j, name in enumerate(self.ops):
            if name in PIXEL_OPS and bool((picked := choice == j).any()):
                x[picked] = PIXEL_OPS[name](x[picked], level[picked], generator)
        return x

    def __repr__(self) -> str:
        return f"RandAugmentLite(n_ops={self.n_ops}, magnitude={self.magnitude}, ops={self.ops})"


# --- batch mixing: soft labels ---

def soft_labels(labels: Tensor, n_classes: int) -> Tensor:
    """``(B, n_classes)`` float targets from class ids ``(B,)``, or soft labels passed through after a check."""
    if labels.dim() == 1 and not labels.is_floating_point():
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(f"labels must lie in [0, {n_classes}), got {int(labels.min())}..{int(labels.max())}")
        return F.one_hot(labels.long(), n_classes).float()
    if labels.dim() == 2 and labels.is_floating_point() and labels.shape[1] == n_classes:
        return labels
    raise ValueError(
        f"labels: expected class ids of shape (B,) or soft labels (B, {n_classes}) float, got "
        f"{tuple(labels.shape)} {labels.dtype}"
    )


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw, from a numpy generator seeded by ``generator`` (torch's Beta takes none)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _check_pair(images: Tensor, labels: Tensor, who: str) -> None:
    if images.dim() != 4 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{who}: expected images (B, C, H, W) and labels with the same B, got {tuple(images.shape)} "
            f"and {tuple(labels.shape)}"
        )


def mixup(images: Tensor, labels: Tensor, *, n_classes: int, alpha: float = 0.2,
          generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Blend each image with a random partner: ``lam * x + (1 - lam) * x[perm]``, one ``lam ~ Beta(alpha, alpha)``.

    Returns the mixed images and soft labels ``(B, n_classes)`` mixed with the same ``lam`` (rows sum to 1).
    """
    _check_pair(images, labels, "mixup")
    target = soft_labels(labels, n_classes)
    lam = _beta(alpha, generator)
    perm = torch.randperm(images.shape[0], generator=generator)
    return lam * images + (1 - lam) * images[perm], lam * target + (1 - lam) * target[perm]


def cutmix(images: Tensor, labels: Tensor, *, n_classes: int, alpha: float = 1.0,
           generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Paste a box of a random partner into each image; labels mix by the box's true area share.

    The box covers ``1 - lam`` of the image (``lam ~ Beta(alpha, alpha)``), centred uniformly and
    clipped at the border, the same box for the whole batch (as in the paper's code).
    """
    _check_pair(images, labels, "cutmix")
    target = soft_labels(labels, n_classes)
    lam = _beta(alpha, generator)
    perm = torch.randperm(images.shape[0], generator=generator)
    _, _, h, w = images.shape
    cut = math.sqrt(1.0 - lam)
    cy, cx = (int(v) for v in torch.randint(0, 1 << 30, (2,), generator=generator) % torch.tensor([h, w]))
    y0, y1 = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
    x0, x1 = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
    return out, kept * target + (1 - kept) * target[perm]


class RandomMix:
    """Per batch: with probability ``prob`` mix, choosing cutmix with ``switch_prob``, else mixup.

    Always returns soft labels ``(B, n_classes)`` (one-hot when the batch is left alone), so the
    loss sees one kind of target throughout a run.
    """

    def __init__(self, n_classes: int, *, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 switch_prob: float = 0.5, prob: float = 1.0) -> None:
        if n_classes < 2 or not (0 <= switch_prob <= 1 and 0 <= prob <= 1):
            raise ValueError(f"RandomMix: need n_classes >= 2 and probabilities in [0, 1], got "
                             f"n_classes={n_classes}, switch_prob={switch_prob}, prob={prob}")
        self.n_classes, self.mixup_alpha, self.cutmix_alpha = n_classes, mixup_alpha, cutmix_alpha
        self.switch_prob, self.prob = switch_prob, prob

    def __call__(self, images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        mix_draw, switch_draw = torch.rand(2, generator=generator).tolist()
        if mix_draw >= self.prob:
            return images, soft_labels(labels, self.n_classes)
        if switch_draw < self.switch_prob:
            return cutmix(images, labels, n_classes=self.n_classes, alpha=self.cutmix_alpha, generator=generator)
        return mixup(images, labels, n_classes=self.n_classes, alpha=self.mixup_alpha, generator=generator)

    def __repr__(self) -> str:
        return (f"RandomMix(n_classes={self.n_classes}, mixup_alpha={self.mixup_alpha}, "
                f"cutmix_alpha={self.cutmix_alpha}, switch_prob={self.switch_prob}, prob={self.prob})")
