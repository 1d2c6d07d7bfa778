"""Looking inside a vision transformer: [CLS] attention per head, attention rollout, and pictures of both.

A ViT's sequence is ``[CLS]`` followed by the image's patches in row-major order, so row 0 of a
layer's attention says where the classification token looks. Two views come from that:

* :func:`cls_attention_maps`: one layer's ``[CLS]`` row, per head, folded back into the patch grid.
* :func:`attention_rollout` (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
  a single layer's weights ignore that information also flows along the residual connection and
  through earlier layers. Rollout averages the heads, adds the identity for the residual path,
  re-normalises each row, and multiplies the layers together, giving how much of each input token
  ends up in each output token.

Fused attention (SDPA, flash) never forms the weights, so :func:`vit_attentions` switches every
attention module to the eager path for the one forward it runs and asks for the weights. The
picture functions (matplotlib, Agg) lay the upsampled maps over the image.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.utils.suggest import did_you_mean

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


# --- the numbers -------------------------------------------------------------------------------------


def _stack_layers(attentions: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-layer ``(B, H, T, T)`` weights as one float64 ``(L, B, H, T, T)`` tensor, checked."""
    if isinstance(attentions, Tensor | np.ndarray) and np.ndim(attentions) == 5:
        attentions = list(attentions)
    if not isinstance(attentions, Sequence) or len(attentions) == 0:
        raise ValueError("attentions must be a non-empty sequence with one (batch, heads, T, T) tensor per layer; "
                         "run the model with output_attentions=True (see vit_attentions)")
    layers = []
    for i, a in enumerate(attentions):
        t = torch.as_tensor(a).detach().to("cpu", torch.float64)
        if t.ndim != 4 or t.shape[-1] != t.shape[-2]:
            raise ValueError(f"attention of layer {i} has shape {tuple(t.shape)}; expected (batch, heads, T, T)")
        if layers and t.shape != layers[0].shape:
            raise ValueError(f"layer {i} attention has shape {tuple(t.shape)} but layer 0 has {tuple(layers[0].shape)}")
        layers.append(t)
    out = torch.stack(layers)  # (L, B, H, T, T)
    if not torch.isfinite(out).all() or (out < 0).any():
        raise ValueError("attention weights must be finite and non-negative (softmax outputs)")
    return out


def _fuse_heads(layer: Tensor, head_fusion: str) -> Tensor:
    """``(B, H, T, T) -> (B, T, T)``: one attention matrix per image from the layer's heads."""
    if head_fusion == "mean":
        return layer.mean(dim=1)
    if head_fusion == "max":
        return layer.amax(dim=1)
    if head_fusion == "min":
        return layer.amin(dim=1)
    raise ValueError(f"unknown head_fusion {head_fusion!r}; expected one of {HEAD_FUSIONS}"
                     f"{did_you_mean(head_fusion, HEAD_FUSIONS)}")


def _discard_lowest(a: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` weakest weights of each row, never the [CLS] column (the noise filter of vit-explain)."""
    t = a.shape[-1]
    n = int(ratio * (t - 1))
    if n == 0:
        return a
    patches = a[..., 1:]  # (B, T, T-1): the [CLS] column stays
    drop = patches.topk(n, dim=-1, largest=False).indices
    kept = patches.scatter(-1, drop, 0.0)
    return torch.cat([a[..., :1], kept], dim=-1)


def attention_rollout(
    attentions: Sequence[Tensor] | Tensor,
    *,
    head_fusion: HeadFusion = "mean",
    add_residual: bool = True,
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout ``(B, T, T)``: row ``i`` says how much of each input token reaches output token ``i``.

    Per layer: fuse the heads (``mean`` as in the paper; ``max``/``min`` as in vit-explain), zero
    the ``discard_ratio`` weakest entries of each row (keeping the [CLS] column), add the identity
    for the residual connection (``add_residual``), re-normalise the rows to sum to 1; then
    multiply the layers from the last down to the first: ``R = A_L @ ... @ A_1``.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio={discard_ratio} must be in [0, 1): it is the fraction of each row zeroed")
    stacked = _stack_layers(attentions)  # (L, B, H, T, T)
    t = stacked.shape[-1]
    eye = torch.eye(t, dtype=stacked.dtype)
    rollout = eye.expand(stacked.shape[1], t, t)  # (B, T, T)
    for layer in stacked:
        a = _discard_lowest(_fuse_heads(layer, head_fusion), discard_ratio)  # (B, T, T)
        if add_residual:
            a = a + eye
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        rollout = a @ rollout  # later layers on the left
    return rollout.float()


def patch_grid(n_tokens: int, *, n_prefix: int = 1) -> int:
    """Side of the square patch grid behind ``n_tokens`` tokens (``n_prefix`` of them not patches, e.g. [CLS])."""
    n = n_tokens - n_prefix
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise ValueError(f"{n_tokens} tokens less {n_prefix} [CLS] leave {n} patches, not a square grid; "
                         "expected T = 1 + (image_size / patch_size) ** 2")
    return side


def cls_attention_maps(attentions: Sequence[Tensor] | Tensor, layer: int = -1) -> Tensor:
    """Where [CLS] looks in ``layer``, per head: ``(B, H, grid, grid)`` over the patches (row-major)."""
    stacked = _stack_layers(attentions)
    n_layers = stacked.shape[0]
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer={layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    weights = stacked[layer]  # (B, H, T, T)
    side = patch_grid(weights.shape[-1])
    return weights[:, :, 0, 1:].reshape(*weights.shape[:2], side, side).float()


def rollout_cls_map(rollout: Tensor) -> Tensor:
    """The [CLS] row of a rollout ``(B, T, T)`` over the patches: ``(B, grid, grid)``."""
    if rollout.ndim != 3:
        raise ValueError(f"rollout has shape {tuple(rollout.shape)}; expected (batch, T, T) from attention_rollout")
    side = patch_grid(rollout.shape[-1])
    return rollout[:, 0, 1:].reshape(rollout.shape[0], side, side)


# --- running the model ------------------------------------------------------------------------------


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Every attention module of ``model`` on the eager path (the only one that forms weights), then back."""
    saved = [(m, m.backend) for m in model.modules() if isinstance(getattr(m, "backend", None), str)]
    try:
        for m, _ in saved:
            m.backend = "eager"
        yield model
    finally:
        for m, backend in saved:
            m.backend = backend


def _weights_flag(model: nn.Module) -> str:
    """The keyword the model's forward takes to return attention weights."""
    params = inspect.signature(model.forward).parameters
    for name in ("output_attentions", "return_weights"):
        if name in params:
            return name
    raise TypeError(f"{type(model).__name__}.forward takes neither output_attentions nor return_weights; "
                    "it cannot return attention weights")


def vit_attentions(model: nn.Module, pixel_values: Tensor) -> tuple[list[Tensor], Tensor]:
    """One eager forward of ``pixel_values (B, C, H, W)``: ``(per-layer (B, H, T, T) weights, logits)``."""
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}; expected (batch, channels, H, W)")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad():
            out = model(pixel_values.to(param.device, param.dtype), **{_weights_flag(model): True})
    finally:
        model.train(was_training)
    if not out.attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights with output_attentions=True")
    return [a.float().cpu() for a in out.attentions], out.logits.float().cpu()
