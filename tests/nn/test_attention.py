"""The three attention paths agree with each other, and MultiHeadAttention agrees with torch's.

Every path is compared with the others on random inputs for every mask kind glassformer builds
(none, causal, padding, both, an explicit boolean mask, additive float biases such as ALiBi and T5's
relative bias, and cache-style queries that are the last ``Tq`` of ``Tk`` positions). The tiled
flash path is run with a small block size so that each case spans several, partly filled tiles.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glassformer.nn.attention import MultiHeadAttention, attention
from glassformer.nn.masks import build_attention_mask, causal_mask
from glassformer.nn.positional import RelativePositionBias, alibi_bias, alibi_slopes

from .torch_copy import copy_mha

ATOL = 1e-5
MASK_KINDS = [
    "none",
    "causal",
    "padding",
    "causal+padding",
    "bool",
    "alibi",
    "relative",
    "causal+padding+alibi",
    "float",
]


def _inputs(b: int, h: int, hkv: int, tq: int, tk: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, d, generator=g)
    k = torch.randn(b, hkv, tk, d, generator=g)
    v = torch.randn(b, hkv, tk, d, generator=g)
    return q, k, v


def _mask_and_bias(
    kind: str, b: int, h: int, tq: int, tk: int, seed: int
) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
    """(mask, bias, is_causal) for one mask kind; padding is left padding of random lengths."""
    g = torch.Generator().manual_seed(seed + 1)
    attention_mask = torch.ones(b, tk, dtype=torch.long)
    for row in range(b):
        attention_mask[row, : int(torch.randint(0, tk, (1,), generator=g))] = 0
    causal = "causal" in kind
    mask = None
    if "padding" in kind:
        mask = build_attention_mask(tq, tk, attention_mask=attention_mask)
    bias = None
    if kind == "bool":
        mask = torch.rand(b, 1, tq, tk, generator=g) > 0.3
    elif kind == "float":  # an additive float mask with large negative entries, given as `mask`
        mask = torch.where(torch.rand(b, h, tq, tk, generator=g) > 0.3, 0.0, -1e4)
    if "alibi" in kind:
        bias = alibi_bias(alibi_slopes(h), tq, tk, bidirectional=not causal)
    elif kind == "relative":
        rel = RelativePositionBias(h, num_buckets=8, max_distance=16)
        torch.nn.init.normal_(rel.embedding.weight, generator=g)
        bias = rel(tq, tk).detach()
    return mask, bias, causal


def _all_backends(q, k, v, mask, bias, causal, block_size=16) -> dict[str, torch.Tensor]:
    return {
        backend: attention(q, k, v, mask=mask, bias=bias, is_causal=causal, backend=backend, block_size=block_size)[0]
        for backend in ("eager", "sdpa", "flash")
    }


def _assert_agree(outs: dict[str, torch.Tensor], label: str) -> None:
    ref = outs["eager"]
    assert torch.isfinite(ref).all(), f"{label}: eager output not finite"
    for name, out in outs.items():
        err = (out - ref).abs().max().item()
        assert err <= ATOL, f"{label}: {name} differs from eager by {err:.2e}"


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize(
    "b,h,hkv,tq,tk,d",
    [
        (2, 4, 4, 23, 23, 8),  # plain multi-head, lengths not a multiple of the block
        (3, 6, 2, 37, 37, 16),  # GQA: 3 query heads per key/value head
        (2, 8, 1, 5, 41, 8),  # MQA, cache-style: 5 new queries after 36 cached positions
        (1, 4, 2, 1, 33, 32),  # one decoding step with GQA
    ],
)
def test_backends_agree(kind: str, b: int, h: int, hkv: int, tq: int, tk: int, d: int) -> None:
    q, k, v = _inputs(b, h, hkv, tq, tk, d, seed=tq * 7 + tk)
    mask, bias, causal = _mask_and_bias(kind, b, h, tq, tk, seed=tk)
    _assert_agree(_all_backends(q, k, v, mask, bias, causal), f"{kind} {(b, h, hkv, tq, tk, d)}")


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    hkv=st.integers(1, 3),
    group=st.integers(1, 3),
    tq=st.integers(1, 40),
    extra=st.integers(0, 30),
    d=st.sampled_from([4, 8, 16]),
    kind=st.sampled_from(MASK_KINDS),
    block=st.sampled_from([4, 16, 128]),
    seed=st.integers(0, 2**16),
)
def test_backends_agree_random_shapes(b, hkv, group, tq, extra, d, kind, block, seed) -> None:
    h, tk = hkv * group, tq + extra
    q, k, v = _inputs(b, h, hkv, tq, tk, d, seed)
    mask, bias, causal = _mask_and_bias(kind, b, h, tq, tk, seed)
    _assert_agree(_all_backends(q, k, v, mask, bias, causal, block), f"{kind} {(b, h, hkv, tq, tk, d)}")


def test_flash_default_block_size_long_sequence() -> None:
    """Several 128-wide tiles with the causal skip of future tiles, GQA and padding."""
    q, k, v = _inputs(1, 4, 2, 300, 300, 16, seed=3)
    for kind in ("causal", "causal+padding"):
        mask, bias, causal = _mask_and_bias(kind, 1, 4, 300, 300, seed=5)
        _assert_agree(_all_backends(q, k, v, mask, bias, causal, block_size=128), kind)


def test_eager_weights_are_the_softmax() -> None:
    """Returned weights: rows sum to 1, zero where masked, and output == weights @ v."""
    q, k, v = _inputs(2, 4, 2, 6, 9, 8, seed=0)
    am = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6])
    mask = build_attention_mask(6, 9, causal=True, attention_mask=am)
    for backend in ("eager", "sdpa", "flash"):  # return_weights forces the eager path
        out, w = attention(q, k, v, mask=mask, backend=backend, return_weights=True)
        assert w.shape == (2, 4, 6, 9)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 6))
        assert (w.masked_select(~mask.expand_as(w)) == 0).all()
        kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # heads 0,1 -> kv 0; 2,3 -> kv 1
        torch.testing.assert_close(out, w @ vv, atol=ATOL, rtol=0)
        scores = (q @ kk.transpose(-1, -2)) / math.sqrt(8)
        ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        torch.testing.assert_close(w, ref, atol=ATOL, rtol=0)


def test_fully_masked_rows_are_finite_and_agree() -> None:
    """A left-padding query sees no key: every path returns the same finite (uniform) average."""
    q, k, v = _inputs(1, 2, 2, 4, 4, 8, seed=1)
    mask = build_attention_mask(4, 4, causal=True, attention_mask=torch.tensor([[0, 0, 1, 1]]))
    outs = _all_backends(q, k, v, mask, None, False, block_size=2)
    _assert_agree(outs, "fully masked rows")
    torch.testing.assert_close(outs["eager"][0, :, 0], v[0].mean(dim=1))


# ---------------------------------------------------------------------------------------------
# MultiHeadAttention == torch.nn.MultiheadAttention with the same weights


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flash"])
@pytest.mark.parametrize("masks", ["none", "key_padding", "causal", "both", "float"])
@pytest.mark.parametrize("cross", [False, True])
def test_mha_matches_torch(backend: str, masks: str, cross: bool) -> None:
    torch.manual_seed(0)
    dim, heads, b, t = 24, 4, 3, 7
    s = 9 if cross else t
    kv_dim = 20 if cross else None
    ours = MultiHeadAttention(dim, heads, kv_dim=kv_dim, backend=backend).eval()
    for p in ours.parameters():  # non-zero biases so that their copy is checked too
        torch.nn.init.normal_(p, std=0.3)
    ref = torch.nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kv_dim, vdim=kv_dim).eval()
    copy_mha(ours, ref)
    x = torch.randn(b, t, dim)
    ctx = torch.randn(b, s, kv_dim) if cross else x
    lengths = torch.tensor([s, s - 3, 2])
    keep = torch.arange(s)[None] < lengths[:, None]  # (B, S) True = real token
    key_padding = ~keep if masks in ("key_padding", "both") else None
    ours_mask: torch.Tensor | None = None
    ref_mask: torch.Tensor | None = None
    if masks in ("causal", "both"):
        allowed = causal_mask(t, s) if not cross else torch.rand(t, s) > 0.3
        allowed[:, 0] = True  # torch gives NaN for a query that sees nothing
        ref_mask = ~allowed  # torch: True = NOT allowed
        ours_mask = allowed
    elif masks == "float":
        ref_mask = torch.randn(t, s)
        ours_mask = ref_mask
    if key_padding is not None:
        pad = keep[:, None, None, :]
        ours_mask = pad if ours_mask is None else ours_mask & pad
    out, w = ours(x, None if not cross else ctx, mask=ours_mask, return_weights=True)
    ref_out, ref_w = ref(x, ctx, ctx, key_padding_mask=key_padding, attn_mask=ref_mask, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)
    torch.testing.assert_close(w, ref_w, atol=ATOL, rtol=0)  # per head (B, H, T, S)
    _, ref_avg = ref(x, ctx, ctx, key_padding_mask=key_padding, attn_mask=ref_mask)
    torch.testing.assert_close(w.mean(dim=1), ref_avg, atol=ATOL, rtol=0)  # averaged over heads
    fast, none_w = ours(x, None if not cross else ctx, mask=ours_mask)  # without weights
    assert none_w is None
    torch.testing.assert_close(fast, ref_out, atol=ATOL, rtol=0)


def test_mha_gqa_equals_mha_with_repeated_kv_heads() -> None:
    """GQA is MHA whose key/value projections repeat each kv head for its group of query heads."""
    torch.manual_seed(0)
    dim, heads, kv_heads, hd = 32, 8, 2, 4
    gqa = MultiHeadAttention(dim, heads, kv_heads)
    mha = MultiHeadAttention(dim, heads)
    with torch.no_grad():
        mha.load_state_dict(
            {
                **gqa.state_dict(),
                **{
                    f"{n}_proj.{p}": getattr(getattr(gqa, f"{n}_proj"), p)
                    .view(kv_heads, hd, -1)
                    .repeat_interleave(heads // kv_heads, dim=0)
                    .reshape(heads * hd, -1)
                    .squeeze(-1)
                    for n in ("k", "v")
                    for p in ("weight", "bias")
                },
            }
        )
    x = torch.randn(2, 5, dim)
    torch.testing.assert_close(gqa(x, is_causal=True)[0], mha(x, is_causal=True)[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_a_decoding_step_with_grouped_heads_matches_repeated_keys(causal: bool) -> None:
    """One query per row over a cache (GQA, no mask): SDPA groups the query heads instead of copying
    the keys; each head must still read its own group's keys and values."""
    q, k, v = _inputs(2, 6, 2, 1, 11, 8, seed=4)
    out, _ = attention(q, k, v, is_causal=causal, backend="sdpa")
    want = torch.softmax(q @ k.repeat_interleave(3, dim=1).transpose(-2, -1) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(out, want @ v.repeat_interleave(3, dim=1))
