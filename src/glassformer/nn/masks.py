"""Attention masks, built in one place.

Convention used everywhere in glassformer: a *boolean* mask is ``True`` where a query may attend
to a key, and broadcasts to ``(batch, heads, query, key)``. Masks are combined as booleans first
and only then turned into an *additive* float mask (0 where allowed, the dtype's most negative
finite value where not). Using a finite value rather than ``-inf`` keeps a fully masked row (a
left-padding query, say) finite: it becomes a uniform average instead of NaN, the same choice
Hugging Face transformers makes, so every attention path agrees on it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(q_len: int, k_len: int, device: torch.device | str | None = None) -> Tensor:
    """``(q_len, k_len)`` bool: query ``i`` sees keys up to its own position.

    When ``k_len > q_len`` (decoding with a KV cache), the queries are the *last* ``q_len``
    positions, so query ``i`` sits at absolute position ``k_len - q_len + i``.
    """
    offset = k_len - q_len
    if offset < 0:
        raise ValueError(f"causal_mask: q_len={q_len} is longer than k_len={k_len}")
    q_pos = torch.arange(q_len, device=device).unsqueeze(1) + offset
    k_pos = torch.arange(k_len, device=device).unsqueeze(0)
    return k_pos <= q_pos


def padding_mask(attention_mask: Tensor) -> Tensor:
    """``(B, 1, 1, T)`` bool from a ``(B, T)`` attention mask of 1 (token) / 0 (padding)."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, seq_len), got {tuple(attention_mask.shape)}"
        )
    return attention_mask.bool()[:, None, None, :]


def key_padding_mask(mask: Tensor | None, expected: tuple[int, int], name: str) -> Tensor | None:
    """A model's ``(B, T)`` 1/0 mask argument ``name`` -> ``(B, 1, 1, T)`` bool, checked first.

    ``expected`` is ``(batch, keys)``; with a KV cache the keys are the cached tokens plus the
    new ones, which a mask cut to the new tokens alone would silently misalign.
    """
    if mask is None:
        return None
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (batch, keys), got {tuple(mask.shape)}")
    return padding_mask(mask)


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given boolean masks (``None`` entries are skipped)."""
    out: Tensor | None = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise TypeError(f"combine_masks expects boolean masks, got dtype {m.dtype}")
        out = m if out is None else (out & m)
    return out


def build_attention_mask(
    q_len: int,
    k_len: int,
    *,
    causal: bool = False,
    attention_mask: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor | None:
    """The usual combination: optional causal mask AND optional key padding mask.

    Returns a bool mask broadcastable to ``(B, H, q_len, k_len)`` or ``None`` when nothing is masked.
    ``attention_mask`` is ``(B, k_len)``, covering every key (cached ones included).
    """
    pad = None
    if attention_mask is not None:
        if attention_mask.shape[-1] != k_len:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions but there are {k_len} keys "
                "(with a KV cache the mask must cover the cached tokens too)"
            )
        pad = padding_mask(attention_mask)
    cm = causal_mask(q_len, k_len, device=device) if causal else None
    return combine_masks(cm, pad)


def to_additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Bool mask -> float mask: 0 where attending, the most negative finite value elsewhere."""
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zero, neg)


def check_mask_shape(mask: Tensor, batch: int, heads: int, q_len: int, k_len: int) -> None:
    """Raise a clear error when ``mask`` cannot broadcast to ``(batch, heads, q_len, k_len)``."""
    target = (batch, heads, q_len, k_len)
    shape = tuple(mask.shape)
    ok = mask.dim() <= 4 and all(
        s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False)
    )
    if not ok:
        raise ValueError(
            f"attention mask of shape {shape} cannot broadcast to (batch, heads, query, key) = {target}"
        )
