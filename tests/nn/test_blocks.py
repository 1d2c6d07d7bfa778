"""Masks and blocks: what a mask hides has no effect, blocks equal torch's layers, weights per layer."""

from __future__ import annotations

import pytest
import torch

from glassformer.nn.blocks import TransformerBlock, TransformerStack
from glassformer.nn.masks import build_attention_mask, causal_mask, combine_masks, padding_mask, to_additive

from .torch_copy import copy_block

BACKENDS = ["eager", "sdpa", "flash"]


def _stack(backend: str, norm_position: str = "pre", **kwargs) -> TransformerStack:
    torch.manual_seed(0)
    return TransformerStack(
        2, 32, 4, n_kv_heads=2, ffn_dim=48, norm_position=norm_position, backend=backend, **kwargs
    ).eval()


# ---------------------------------------------------------------------------------------------
# the mask helpers


def test_causal_mask_layout() -> None:
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())
    # two new queries after three cached keys sit at positions 3 and 4
    assert torch.equal(causal_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool())
    with pytest.raises(ValueError, match="q_len=4 is longer than k_len=2"):
        causal_mask(4, 2)


def test_build_and_combine_masks() -> None:
    am = torch.tensor([[0, 1, 1], [1, 1, 1]])
    m = build_attention_mask(3, 3, causal=True, attention_mask=am)
    assert m.shape == (2, 1, 3, 3)
    assert torch.equal(m[0, 0], torch.tensor([[0, 0, 0], [0, 1, 0], [0, 1, 1]]).bool())
    assert torch.equal(m[1, 0], causal_mask(3, 3))
    assert build_attention_mask(3, 3) is None
    assert torch.equal(padding_mask(am), am.bool()[:, None, None, :])
    assert combine_masks(None, None) is None
    with pytest.raises(TypeError, match="boolean masks, got dtype torch.float32"):
        combine_masks(torch.zeros(2, 2))
    add = to_additive(torch.tensor([True, False]), torch.float16)
    assert add.tolist() == [0.0, torch.finfo(torch.float16).min]


# ---------------------------------------------------------------------------------------------
# what a mask hides has no effect


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_future_tokens_never_change_the_past(backend: str) -> None:
    stack = _stack(backend)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12, 32, generator=g)
    cut = 7
    y = x.clone()
    y[:, cut:] = torch.randn(2, 12 - cut, 32, generator=g)  # a different future
    with torch.no_grad():
        a, b = stack(x, is_causal=True).hidden, stack(y, is_causal=True).hidden
    torch.testing.assert_close(a[:, :cut], b[:, :cut], atol=1e-5, rtol=0)
    assert (a[:, cut:] - b[:, cut:]).abs().min() > 1e-4, "the future itself should change"
    # without the causal mask the past does change: the check above is not vacuous
    with torch.no_grad():
        assert (stack(x).hidden[:, :cut] - stack(y).hidden[:, :cut]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [False, True])
def test_padded_tokens_never_change_the_others(backend: str, causal: bool) -> None:
    stack = _stack(backend)
    g = torch.Generator().manual_seed(2)
    am = torch.tensor([[1] * 10, [0, 0, 0] + [1] * 7, [1] * 6 + [0] * 4])  # left and right padding
    x = torch.randn(3, 10, 32, generator=g)
    y = torch.where(am[..., None].bool(), x, torch.randn(3, 10, 32, generator=g) * 5)
    mask = build_attention_mask(10, 10, attention_mask=am)
    with torch.no_grad():
        a = stack(x, mask=mask, is_causal=causal).hidden
        b = stack(y, mask=mask, is_causal=causal).hidden
        unmasked = stack(y, is_causal=causal).hidden
    real = am.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)
    assert (a[real] - unmasked[real]).abs().max() > 1e-3, "without the mask the padding should matter"


# ---------------------------------------------------------------------------------------------
# blocks equal torch's encoder layer; weights come back per layer


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_block_matches_torch_encoder_layer(norm_position: str, activation: str) -> None:
    torch.manual_seed(0)
    ours = TransformerBlock(32, 4, ffn_dim=64, activation=activation, norm_position=norm_position).eval()
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.2)
    ref = torch.nn.TransformerEncoderLayer(
        32, 4, 64, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_position == "pre"
    )
    copy_block(ours, ref)
    ref.train()  # training mode (no dropout) keeps torch off its fused fast path
    x = torch.randn(2, 9, 32)
    am = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        out = ours(x, mask=padding_mask(am), is_causal=True).hidden
        expected = ref(x, src_mask=~causal_mask(9, 9), src_key_padding_mask=am == 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_stack_returns_weights_per_layer_in_bertviz_layout() -> None:
    torch.manual_seed(0)
    stack = TransformerStack(3, 32, 4, ffn_dim=48, cross_attention=True, context_dim=24).eval()
    x, ctx = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    ctx_mask = padding_mask(torch.tensor([[1] * 7, [1] * 4 + [0] * 3]))
    out = stack(x, is_causal=True, context=ctx, context_mask=ctx_mask, return_weights=True)
    assert len(out.attentions) == 3 and len(out.cross_attentions) == 3
    for w in out.attentions:
        assert w.shape == (2, 4, 5, 5)
        assert torch.equal(w[0, 0] > 0, causal_mask(5, 5))
    for w in out.cross_attentions:
        assert w.shape == (2, 4, 5, 7)
        assert (w[1, :, :, 4:] == 0).all()
    # asking for weights does not change the output
    torch.testing.assert_close(out.hidden, stack(x, is_causal=True, context=ctx, context_mask=ctx_mask).hidden)
    assert stack(x, is_causal=True, context=ctx).attentions is None
    with pytest.raises(ValueError, match="pass context="):
        stack(x)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    x = torch.randn(2, 6, 32)
    grads = []
    for checkpointing in (False, True):
        stack = _stack("sdpa").train()
        stack.gradient_checkpointing = checkpointing
        stack(x, is_causal=True).hidden.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in stack.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_stack_final_norm_is_optional() -> None:
    assert _stack("sdpa").final_norm is not None
    assert _stack("sdpa", final_norm=False).final_norm is None
    with pytest.raises(ValueError, match="n_layers must be positive, got 0"):
        TransformerStack(0, 8, 2)
    with pytest.raises(ValueError, match="norm_position must be 'pre' or 'post', got 'middle'"):
        TransformerBlock(8, 2, norm_position="middle")  # type: ignore[arg-type]
