"""Positional information: sinusoidal, learned absolute, T5 relative bias, RoPE and ALiBi.

Absolute encodings (sinusoidal, learned) are *added to the token embeddings*. The others act
inside attention: T5's relative bias and ALiBi are additive biases on the attention scores; RoPE
rotates queries and keys so that their dot product depends on the relative offset only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_length(needed: int, max_len: int, what: str) -> None:
    if needed > max_len:
        raise ValueError(
            f"sequence needs {needed} positions but the {what} table has max_len={max_len}; "
            "shorten the input or build the model with a larger max_len"
        )


def sinusoidal_table(max_len: int, dim: int, base: float = 10000.0) -> Tensor:
    """``(max_len, dim)``: ``PE[p, 2i] = sin(p / base^(2i/dim))``, ``PE[p, 2i+1] = cos(...)``."""
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal encoding needs an even dim, got {dim}")
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (P, 1)
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.zeros(max_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table of Vaswani et al. (2017) to ``(B, T, C)`` embeddings."""

    def __init__(self, dim: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        t = x.shape[1]
        _check_length(offset + t, self.max_len, "sinusoidal positional")
        return self.dropout(x + self.table[offset : offset + t].to(x.dtype))


class LearnedPositionalEmbedding(nn.Module):
    """A trained vector per absolute position (GPT-2, BERT). Returns ``(B or 1, T, C)``."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        """``positions``: ``(T,)`` or ``(B, T)`` integer positions."""
        if positions.numel():
            _check_length(int(positions.max()) + 1, self.max_len, "learned positional")
        return nn.functional.embedding(positions, self.weight)


def relative_position_bucket(
    relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """T5's bucketing of ``key_pos - query_pos``.

    Half the buckets (per direction when bidirectional) hold exact small offsets; the rest cover
    larger offsets on a log scale up to ``max_distance``, beyond which all share the last bucket.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)  # only the past counts
    max_exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (num_buckets - max_exact)).long().clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < max_exact, distance, large)


class RelativePositionBias(nn.Module):
    """T5-style learned scalar bias per (head, bucket of relative offset): ``(1, H, Tq, Tk)``."""

    def __init__(
        self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, n_heads)

    def forward(self, q_len: int, k_len: int, device: torch.device | None = None) -> Tensor:
        device = device or self.embedding.weight.device
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # queries are the last q_len
        k_pos = torch.arange(k_len, device=device)[None, :]
        buckets = relative_position_bucket(k_pos - q_pos, self.bidirectional, self.num_buckets, self.max_distance)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)  # (1, H, Tq, Tk)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al. 2021): rotate pairs of q/k features by an angle proportional to position.

    Uses the "rotate half" layout of GPT-NeoX / Llama (feature ``i`` pairs with ``i + head_dim/2``),
    which is what Hugging Face Llama checkpoints expect. ``cos_sin(positions)`` is computed once
    per forward and shared by every layer; positions may be ``(T,)`` or per row ``(B, T)`` (a
    left-padded batch), and with a cache they simply continue from the cached length.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``(B or 1, 1, T, head_dim)`` cos and sin tables for the given positions."""
        if positions.dim() == 1:
            positions = positions[None]
        freqs = positions[..., None].float() * self.inv_freq  # (B, T, hd/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, hd)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Rotate ``(B, H, T, hd)`` queries and keys by the angles in ``cos``/``sin``.

    The result keeps the dtype of ``q``/``k``: under autocast they are bf16 while the tables are
    fp32, and attention needs q and k in the dtype of v.
    """
    return (q * cos + rotate_half(q) * sin).to(q.dtype), (k * cos + rotate_half(k) * sin).to(k.dtype)


def alibi_slopes(n_heads: int) -> Tensor:
    """ALiBi's per-head slopes (Press et al. 2022).

    For ``n`` a power of two: the geometric sequence ``2^(-8/n), 2^(-16/n), ..., 2^(-8)``. Otherwise
    the slopes of the closest smaller power of two ``p``, followed by every other slope of ``2p``.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    p = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(p)
    if p != n_heads:
        slopes += power_of_two(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes)


def alibi_bias(slopes: Tensor, q_len: int, k_len: int, bidirectional: bool = False) -> Tensor:
    """``(1, H, Tq, Tk)`` bias ``-slope * distance``; queries are the last ``q_len`` positions.

    Causal models use ``query_pos - key_pos`` (future keys are masked anyway); encoders use the
    absolute distance.
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=slopes.device)[:, None]
    k_pos = torch.arange(k_len, device=slopes.device)[None, :]
    dist = (q_pos - k_pos).abs() if bidirectional else (q_pos - k_pos)
    return (-slopes[:, None, None] * dist.to(slopes.dtype)).unsqueeze(0)
