"""Positional encodings: each against its formula or paper, and against transformers where it has one."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.nn.positional import (
    LearnedPositionalEmbedding,
    RelativePositionBias,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    relative_position_bucket,
    sinusoidal_table,
)

# ---------------------------------------------------------------------------------------------
# RoPE


def _rotated_score(rope: RotaryEmbedding, q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> float:
    """q at position m, k at position n, both rotated, then their dot product."""
    cos_q, sin_q = rope.cos_sin(torch.tensor([m]))
    cos_k, sin_k = rope.cos_sin(torch.tensor([n]))
    q_rot, _ = apply_rotary(q, q, cos_q, sin_q)
    k_rot, _ = apply_rotary(k, k, cos_k, sin_k)
    return float((q_rot * k_rot).sum())


@settings(max_examples=60, deadline=None)
@given(
    head_dim=st.sampled_from([2, 8, 32, 64]),
    m=st.integers(0, 500),
    n=st.integers(0, 500),
    shift=st.integers(-500, 500),
    seed=st.integers(0, 2**16),
)
def test_rope_score_depends_only_on_relative_offset(head_dim, m, n, shift, seed) -> None:
    """<R_m q, R_n k> == <R_{m+s} q, R_{n+s} k> for every shift s (Su et al. 2021, eq. 16)."""
    shift = max(shift, -min(m, n))  # keep positions non-negative
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 1, 1, head_dim, generator=g), torch.randn(1, 1, 1, head_dim, generator=g)
    rope = RotaryEmbedding(head_dim)
    a = _rotated_score(rope, q, k, m, n)
    b = _rotated_score(rope, q, k, m + shift, n + shift)
    # float32 angles lose ~1e-7 relative: allow that much error per unit of position
    tol = 5e-7 * (max(m, n) + abs(shift) + 1) * float(q.norm() * k.norm()) + 1e-5
    assert abs(a - b) <= tol, f"score {a} at ({m}, {n}) but {b} after shifting both by {shift}"


def test_rope_score_does_change_with_offset() -> None:
    """The property above is not vacuous: a different offset gives a different score."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    rope = RotaryEmbedding(16)
    scores = [_rotated_score(rope, q, k, 10, 10 - d) for d in range(6)]
    assert max(scores) - min(scores) > 0.1, scores
    assert _rotated_score(rope, q, k, 0, 0) == pytest.approx(float((q * k).sum()), abs=1e-5)


def test_rope_matches_formula_and_transformers_llama() -> None:
    """cos/sin tables from the formula, and the rotation equal to transformers' Llama helpers."""
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    hd, base = 32, 500000.0
    positions = torch.tensor([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])  # (B, T), e.g. after left padding
    rope = RotaryEmbedding(hd, base=base)
    cos, sin = rope.cos_sin(positions)  # (B, 1, T, hd)
    inv = torch.tensor([base ** (-2 * i / hd) for i in range(hd // 2)], dtype=torch.float64)
    angles = positions[..., None].double() * inv
    torch.testing.assert_close(cos[:, 0].double(), torch.cat([angles, angles], -1).cos(), atol=1e-5, rtol=0)
    torch.testing.assert_close(sin[:, 0].double(), torch.cat([angles, angles], -1).sin(), atol=1e-5, rtol=0)

    config = LlamaConfig(hidden_size=4 * hd, num_attention_heads=4, head_dim=hd, rope_theta=base)
    ref_cos, ref_sin = llama.LlamaRotaryEmbedding(config)(torch.zeros(1), positions)  # (B, T, hd)
    torch.testing.assert_close(cos[:, 0], ref_cos, atol=1e-6, rtol=0)
    q, k = torch.randn(2, 4, 5, hd), torch.randn(2, 2, 5, hd)
    ours = apply_rotary(q, k, cos, sin)
    ref = llama.apply_rotary_pos_emb(q, k, ref_cos, ref_sin)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_rope_odd_head_dim_is_refused() -> None:
    with pytest.raises(ValueError, match="even head_dim, got 7"):
        RotaryEmbedding(7)


# ---------------------------------------------------------------------------------------------
# ALiBi


def _paper_slopes(n: int) -> list[float]:
    """Press et al. (2022), section 3: for n heads, the geometric sequence that starts at
    2^(-8/n) with that same ratio. For n not a power of two, the reference code takes the
    sequence of the largest power of two p < n, then every other member of the 2p sequence."""

    def geometric(count: int) -> list[float]:
        first = 2.0 ** (-8.0 / count)
        out, value = [], first
        for _ in range(count):
            out.append(value)
            value *= first
        return out

    p = 1
    while p * 2 <= n:
        p *= 2
    return geometric(p) + [s for i, s in enumerate(geometric(2 * p)) if i % 2 == 0][: n - p]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6, 8, 12, 16, 20, 32, 40])
def test_alibi_slopes_follow_the_paper(n: int) -> None:
    torch.testing.assert_close(alibi_slopes(n).double(), torch.tensor(_paper_slopes(n), dtype=torch.float64))


def test_alibi_slopes_literal_values() -> None:
    """The paper's own example (8 heads: 1/2 ... 1/256) and two non-powers of two, written out."""
    expected = {
        8: [2.0**-i for i in range(1, 9)],
        6: [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3],
        12: [2.0**-i for i in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5],
    }
    for n, slopes in expected.items():
        torch.testing.assert_close(alibi_slopes(n), torch.tensor(slopes), msg=f"n_heads={n}")


def test_alibi_bias_values() -> None:
    slopes = alibi_slopes(4)
    causal = alibi_bias(slopes, q_len=3, k_len=5)  # queries at positions 2, 3, 4
    both = alibi_bias(slopes, q_len=3, k_len=5, bidirectional=True)
    assert causal.shape == both.shape == (1, 4, 3, 5)
    for h in range(4):
        for i in range(3):
            for j in range(5):
                d = (i + 2) - j
                assert causal[0, h, i, j] == pytest.approx(-slopes[h].item() * d)
                assert both[0, h, i, j] == pytest.approx(-slopes[h].item() * abs(d))


# ---------------------------------------------------------------------------------------------
# sinusoidal and learned absolute positions


@pytest.mark.parametrize("dim", [2, 8, 10, 64])
def test_sinusoidal_table_matches_formula(dim: int) -> None:
    table = sinusoidal_table(50, dim)
    for pos in range(50):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_encoding_adds_rows_from_offset() -> None:
    enc = SinusoidalPositionalEncoding(16, max_len=20)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(enc(x), x + sinusoidal_table(20, 16)[:5])
    torch.testing.assert_close(enc(x, offset=7), x + sinusoidal_table(20, 16)[7:12])


def test_learned_positional_embedding_lookup() -> None:
    emb = LearnedPositionalEmbedding(10, 4)
    torch.testing.assert_close(emb(torch.tensor([3, 0, 9])), emb.weight[[3, 0, 9]])
    assert emb(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, 4)


# ---------------------------------------------------------------------------------------------
# T5 relative position buckets and bias


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 64), (64, 256), (8, 20)])
def test_t5_buckets_match_transformers(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-3000, 3001)[None, :]
    ours = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    ref = t5.T5Attention._relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    assert torch.equal(ours, ref)
    # every bucket is used over this range, except, when bidirectional, "offset +0" (0 counts as past)
    assert ours.unique().numel() == num_buckets - int(bidirectional)


@pytest.mark.parametrize("is_decoder", [False, True])
def test_relative_position_bias_matches_t5_compute_bias(is_decoder: bool) -> None:
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    from transformers import T5Config

    config = T5Config(d_model=32, num_heads=4, d_kv=8, relative_attention_num_buckets=16,
                      relative_attention_max_distance=40, is_decoder=is_decoder)
    ref = t5.T5Attention(config, has_relative_attention_bias=True)
    ours = RelativePositionBias(4, num_buckets=16, max_distance=40, bidirectional=not is_decoder)
    torch.nn.init.normal_(ours.embedding.weight)
    ref.relative_attention_bias.weight.data.copy_(ours.embedding.weight)
    with torch.no_grad():
        torch.testing.assert_close(ours(60, 60), ref.compute_bias(60, 60))
        # cache style: 5 new queries after 55 cached positions
        torch.testing.assert_close(ours(5, 60), ref.compute_bias(5, 60, past_seen_tokens=55))
