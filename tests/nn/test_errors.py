"""Bad input is refused at glassformer's boundary with a message that names the problem and the values."""

from __future__ import annotations

import pytest
import torch

from glassformer.nn.attention import MultiHeadAttention, attention
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.masks import build_attention_mask, padding_mask
from glassformer.nn.positional import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by n_heads=4"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match=r"dim=30 is not divisible by n_heads=4"):
        TransformerStack(2, 30, 4)
    with pytest.raises(ValueError, match=r"n_heads=8 is not a multiple of n_kv_heads=3"):
        MultiHeadAttention(32, 8, 3)
    with pytest.raises(ValueError, match=r"n_heads \(0\) and n_kv_heads \(0\) must be positive"):
        MultiHeadAttention(32, 0)
    MultiHeadAttention(30, 4, head_dim=8)  # an explicit head_dim lifts the constraint


def test_mask_of_the_wrong_shape() -> None:
    q = k = v = torch.randn(1, 2, 4, 8)
    for backend in ("eager", "sdpa", "flash"):
        with pytest.raises(ValueError, match=r"mask of shape \(2, 5\) cannot broadcast to .* = \(1, 2, 4, 4\)"):
            attention(q, k, v, mask=torch.ones(2, 5, dtype=torch.bool), backend=backend)
        with pytest.raises(ValueError, match=r"mask of shape \(3, 1, 4, 4\) cannot broadcast to .* = \(1, 2, 4, 4\)"):
            attention(q, k, v, bias=torch.zeros(3, 1, 4, 4), backend=backend)
    mha = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 1, 7\) cannot broadcast to .* = \(1, 2, 4, 4\)"):
        mha(torch.randn(1, 4, 16), mask=padding_mask(torch.ones(1, 7)))
    with pytest.raises(ValueError, match=r"attention_mask covers 5 positions but there are 7 keys"):
        build_attention_mask(1, 7, attention_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, seq_len\), got \(2, 1, 5\)"):
        padding_mask(torch.ones(2, 1, 5))


def test_integer_mask_is_refused() -> None:
    """A 1/0 integer mask passed as ``mask=`` must not be silently added to the scores as a bias."""
    q = k = v = torch.randn(1, 2, 4, 8)
    for backend in ("eager", "sdpa", "flash"):
        with pytest.raises(TypeError, match=r"mask must be bool .* or floating .*; got torch.int64"):
            attention(q, k, v, mask=torch.ones(1, 1, 1, 4, dtype=torch.long), backend=backend)


def test_dtype_mismatch() -> None:
    mha = MultiHeadAttention(16, 2)
    with pytest.raises(TypeError, match=r"input dtype torch.float64 does not match the layer's torch.float32"):
        mha(torch.randn(1, 3, 16, dtype=torch.float64))
    q = torch.randn(1, 2, 3, 8)
    with pytest.raises(TypeError, match=r"share a dtype; got torch.float32, torch.float16, torch.float32"):
        attention(q, q.half(), q)


def test_qkv_shapes() -> None:
    q = torch.randn(1, 6, 3, 8)
    with pytest.raises(ValueError, match=r"query heads \(6\) must be a multiple of key/value heads \(4\)"):
        attention(q, torch.randn(1, 4, 3, 8), torch.randn(1, 4, 3, 8))
    with pytest.raises(ValueError, match=r"disagree on batch size or head_dim"):
        attention(q, torch.randn(1, 6, 3, 4), torch.randn(1, 6, 3, 4))
    with pytest.raises(ValueError, match=r"q \(6, 3, 8\)"):
        attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match=r"must be \(batch, seq, 16\); got \(2, 3, 12\)"):
        MultiHeadAttention(16, 2)(torch.randn(2, 3, 12))
    with pytest.raises(ValueError, match=r"unknown attention backend 'fast'"):
        attention(q, q, q, backend="fast")  # type: ignore[arg-type]


def test_sequence_longer_than_the_positional_table() -> None:
    enc = SinusoidalPositionalEncoding(8, max_len=8)
    with pytest.raises(ValueError, match=r"needs 10 positions but the sinusoidal positional table has max_len=8"):
        enc(torch.randn(1, 10, 8))
    with pytest.raises(ValueError, match=r"needs 9 positions .* max_len=8"):
        enc(torch.randn(1, 4, 8), offset=5)
    emb = LearnedPositionalEmbedding(10, 4)
    with pytest.raises(ValueError, match=r"needs 13 positions but the learned positional table has max_len=10"):
        emb(torch.arange(13))
    with pytest.raises(ValueError, match=r"even dim, got 7"):
        sinusoidal_table(4, 7)
