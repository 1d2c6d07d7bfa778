"""KV caches: decoding piece by piece through a stack equals one full forward.

The stack uses RoPE whose positions continue from the cache, grouped-query attention and a
left-padded batch whose per-row positions start at each row's first real token.
"""

from __future__ import annotations

import pytest
import torch

from glassformer.nn.blocks import TransformerStack
from glassformer.nn.cache import DynamicCache, KVCache, StaticCache
from glassformer.nn.masks import build_attention_mask
from glassformer.nn.positional import RotaryEmbedding

B, T, DIM, HEADS, KV_HEADS, LAYERS = 3, 11, 32, 4, 2, 2
HEAD_DIM = DIM // HEADS


def _setup(backend: str) -> tuple[TransformerStack, RotaryEmbedding, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    stack = TransformerStack(LAYERS, DIM, HEADS, n_kv_heads=KV_HEADS, ffn_dim=64, activation="swiglu",
                             norm="rmsnorm", bias=False, backend=backend).eval()
    rope = RotaryEmbedding(HEAD_DIM)
    x = torch.randn(B, T, DIM)
    am = torch.ones(B, T, dtype=torch.long)
    am[1, :3] = 0  # left padding, as a batch of prompts of different lengths has
    am[2, :6] = 0
    positions = (am.cumsum(-1) - 1).clamp(min=0)  # each row counts from its first real token
    return stack, rope, x, am, positions


def _full(stack, rope, x, am, positions) -> torch.Tensor:
    mask = build_attention_mask(T, T, attention_mask=am)
    return stack(x, mask=mask, is_causal=True, rope=rope.cos_sin(positions)).hidden


def _incremental(stack, rope, x, am, positions, cache: KVCache, prefill: int) -> torch.Tensor:
    """A prompt of ``prefill`` tokens in one call, then one token per call."""
    outs, start = [], 0
    for end in [prefill, *range(prefill + 1, T + 1)]:
        assert cache.seq_len() == start
        mask = build_attention_mask(end - start, end, attention_mask=am[:, :end])  # keys: cached + new
        rope_cs = rope.cos_sin(positions[:, start:end])
        outs.append(stack(x[:, start:end], mask=mask, is_causal=True, rope=rope_cs, cache=cache).hidden)
        start = end
    return torch.cat(outs, dim=1)


def _make_cache(kind: str) -> KVCache:
    if kind == "dynamic":
        return DynamicCache()
    return StaticCache(LAYERS, B, KV_HEADS, max_len=T + 2, head_dim=HEAD_DIM)


@pytest.mark.parametrize("backend", ["eager", "sdpa", "flash"])
@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("prefill", [1, 7])
def test_cached_decoding_equals_full_forward(backend: str, kind: str, prefill: int) -> None:
    stack, rope, x, am, positions = _setup(backend)
    with torch.no_grad():
        full = _full(stack, rope, x, am, positions)
        step = _incremental(stack, rope, x, am, positions, _make_cache(kind), prefill)
    real = am.bool()  # a padding query has no defined output worth comparing
    torch.testing.assert_close(step[real], full[real], atol=1e-5, rtol=0)


def test_positions_must_continue_from_the_cache() -> None:
    """Restarting RoPE positions at 0 each step gives different outputs: the test above can fail."""
    stack, rope, x, am, positions = _setup("sdpa")
    restarted = torch.zeros_like(positions)
    with torch.no_grad():
        full = _full(stack, rope, x, am, positions)
        wrong = torch.cat(
            [
                stack(
                    x[:, t : t + 1], mask=build_attention_mask(1, t + 1, attention_mask=am[:, : t + 1]),
                    is_causal=True, rope=rope.cos_sin(restarted[:, t : t + 1]), cache=cache,
                ).hidden
                for cache in [DynamicCache()]
                for t in range(T)
            ],
            dim=1,
        )
    assert (wrong[0, 2:] - full[0, 2:]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_cache_update_reorder_and_length(kind: str) -> None:
    cache = _make_cache(kind)
    k1, v1 = torch.randn(B, KV_HEADS, 4, HEAD_DIM), torch.randn(B, KV_HEADS, 4, HEAD_DIM)
    k2, v2 = torch.randn(B, KV_HEADS, 1, HEAD_DIM), torch.randn(B, KV_HEADS, 1, HEAD_DIM)
    for layer in range(LAYERS):
        cache.update(layer, k1, v1)
    keys, values = cache.update(0, k2, v2)
    assert torch.equal(keys, torch.cat([k1, k2], 2)) and torch.equal(values, torch.cat([v1, v2], 2))
    assert cache.seq_len(0) == 5 and cache.seq_len(1) == 4
    index = torch.tensor([2, 0, 0])  # beam search: keep beam 2 once and beam 0 twice
    cache.reorder(index)
    keys, _ = cache.update(1, k2[index], v2[index])
    assert torch.equal(keys, torch.cat([k1[index], k2[index]], 2))


def test_static_cache_errors_name_the_sizes() -> None:
    cache = StaticCache(1, 2, 2, max_len=4, head_dim=8)
    cache.update(0, torch.randn(2, 2, 3, 8), torch.randn(2, 2, 3, 8))
    with pytest.raises(ValueError, match=r"max_len=4 positions; writing 2 more after 3"):
        cache.update(0, torch.randn(2, 2, 2, 8), torch.randn(2, 2, 2, 8))
    with pytest.raises(ValueError, match=r"made for batch 2 with 2 kv heads; got keys of shape \(3, 2, 1, 8\)"):
        cache.update(0, torch.randn(3, 2, 1, 8), torch.randn(3, 2, 1, 8))


def test_dynamic_cache_layer_out_of_order() -> None:
    cache = DynamicCache()
    with pytest.raises(IndexError, match="cache has 0 layers; layer 1 updated out of order"):
        cache.update(1, torch.randn(1, 1, 1, 2), torch.randn(1, 1, 1, 2))
