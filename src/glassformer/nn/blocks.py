"""Transformer blocks and stacks: encoder, decoder (optional cross-attention), pre- or post-norm.

A block is attention + feed-forward, each wrapped in a residual connection and a norm:

* ``post`` (the original 2017 Transformer, BERT): ``x = norm(x + sublayer(x))``
* ``pre``  (GPT-2, Llama, most modern models):    ``x = x + sublayer(norm(x))``; a pre-norm
  stack ends with one more norm (``final_norm``).

Every argument is plain (``dim``, ``n_heads``...): families translate their configs into these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch.utils.checkpoint
from torch import Tensor, nn

from glassformer.nn.attention import Backend, MultiHeadAttention
from glassformer.nn.cache import CrossAttentionCache, KVCache
from glassformer.nn.ffn import Activation, FeedForward
from glassformer.nn.norms import NormKind, make_norm

NormPosition = Literal["pre", "post"]


@dataclass
class BlockOutput:
    hidden: Tensor  # (B, T, C)
    self_weights: Tensor | None = None  # (B, H, T, T_keys) when asked for
    cross_weights: Tensor | None = None  # (B, H, T, T_context) when asked for


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; residuals and norms around each."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        *,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        ffn_dim: int | None = None,
        activation: Activation = "gelu",
        norm: NormKind = "layernorm",
        norm_eps: float = 1e-5,
        norm_position: NormPosition = "pre",
        bias: bool = True,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        cross_attention: bool = False,
        context_dim: int | None = None,
        attn_scale: float | None = None,
        backend: Backend = "sdpa",
    ) -> None:
        super().__init__()
        if norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.norm_position = norm_position
        attn_kwargs = dict(head_dim=head_dim, bias=bias, dropout=attn_dropout, scale=attn_scale, backend=backend)
        self.attn_norm = make_norm(norm, dim, norm_eps, bias)
        self.attn = MultiHeadAttention(dim, n_heads, n_kv_heads, **attn_kwargs)
        self.cross_norm = make_norm(norm, dim, norm_eps, bias) if cross_attention else None
        self.cross_attn = (
            MultiHeadAttention(dim, n_heads, n_kv_heads, kv_dim=context_dim, **attn_kwargs)
            if cross_attention
            else None
        )
        self.ffn_norm = make_norm(norm, dim, norm_eps, bias)
        self.ffn = FeedForward(dim, ffn_dim or 4 * dim, activation, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer) -> tuple[Tensor, Tensor | None]:
        if self.norm_position == "pre":
            out, weights = sublayer(norm(x))
            return x + self.dropout(out), weights
        out, weights = sublayer(x)
        return norm(x + self.dropout(out)), weights

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        layer_idx: int = 0,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        context_bias: Tensor | None = None,
        context_cache: CrossAttentionCache | None = None,
        return_weights: bool = False,
    ) -> BlockOutput:
        """One block. ``context_cache`` keeps the cross-attention keys/values of ``context`` from the
        first call on (decoding: the encoder output does not change from token to token)."""
        x, self_w = self._residual(
            x,
            self.attn_norm,
            lambda h: self.attn(
                h, mask=mask, bias=bias, is_causal=is_causal, rope=rope, cache=cache,
                layer_idx=layer_idx, return_weights=return_weights,
            ),
        )  # (B, T, C)
        cross_w = None
        if self.cross_attn is not None:
            if context is None:
                raise ValueError("this block has cross-attention: pass context= (e.g. the encoder output)")
            x, cross_w = self._residual(
                x,
                self.cross_norm,
                lambda h: self.cross_attn(
                    h, context, mask=context_mask, bias=context_bias, context_cache=context_cache,
                    layer_idx=layer_idx, return_weights=return_weights,
                ),
            )  # (B, T, C)
        x, _ = self._residual(x, self.ffn_norm, lambda h: (self.ffn(h), None))  # (B, T, C)
        return BlockOutput(x, self_w, cross_w)


@dataclass
class StackOutput:
    hidden: Tensor  # (B, T, C) after the final norm, if any
    attentions: list[Tensor] | None = None  # per layer (B, H, T, T_keys)
    cross_attentions: list[Tensor] | None = None  # per layer (B, H, T, T_context)


class TransformerStack(nn.Module):
    """``n_layers`` blocks and an optional final norm.

    An encoder stack is ``TransformerStack(..., cross_attention=False)`` called without
    ``is_causal``; a decoder stack is called with ``is_causal=True`` and, when
    ``cross_attention=True``, a ``context`` (while decoding, with a ``context_cache`` that keeps
    each layer's keys and values of it after the first step). ``gradient_checkpointing`` trades compute for memory:
    each block's activations are recomputed in the backward pass instead of stored.
    """

    def __init__(self, n_layers: int, dim: int, n_heads: int, *, final_norm: bool = True, **block_kwargs) -> None:
        super().__init__()
        if n_layers <= 0:
            raise ValueError(f"n_layers must be positive, got {n_layers}")
        self.layers = nn.ModuleList(TransformerBlock(dim, n_heads, **block_kwargs) for _ in range(n_layers))
        norm = block_kwargs.get("norm", "layernorm")
        eps = block_kwargs.get("norm_eps", 1e-5)
        self.final_norm = make_norm(norm, dim, eps, block_kwargs.get("bias", True)) if final_norm else None
        self.gradient_checkpointing = False
        # A faster one-token decoding step (glassformer.quant.decode sets it for quantized stacks):
        # called as decode_hook(x, rope, cache) for one new token at batch 1 without autograd; it
        # returns the final hidden state, or None when it cannot run this call (the blocks then do).
        self.decode_hook: Callable[[Tensor, tuple[Tensor, Tensor] | None, KVCache], Tensor | None] | None = None

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        context_bias: Tensor | None = None,
        context_cache: CrossAttentionCache | None = None,
        return_weights: bool = False,
    ) -> StackOutput:
        if (
            self.decode_hook is not None and cache is not None and x.shape[:2] == (1, 1) and mask is None
            and bias is None and context is None and not return_weights and not torch.is_grad_enabled()
            and (hidden := self.decode_hook(x, rope, cache)) is not None
        ):  # fmt: skip
            return StackOutput(hidden)
        attentions: list[Tensor] = []
        cross: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            kwargs = dict(
                mask=mask, bias=bias, is_causal=is_causal, rope=rope, cache=cache, layer_idx=i,
                context=context, context_mask=context_mask, context_bias=context_bias,
                context_cache=context_cache, return_weights=return_weights,
            )
            if self.gradient_checkpointing and self.training and cache is None and context_cache is None:
                out = torch.utils.checkpoint.checkpoint(lambda h, kw=kwargs, f=layer: f(h, **kw), x, use_reentrant=False)
            else:
                out = layer(x, **kwargs)
            x = out.hidden
            if return_weights:
                attentions.append(out.self_weights)
                if out.cross_weights is not None:
                    cross.append(out.cross_weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return StackOutput(x, attentions if return_weights else None, cross if (return_weights and cross) else None)
