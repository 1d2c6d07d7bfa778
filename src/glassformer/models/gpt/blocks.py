"""The decoder block for GPT configs that choose Gemma 3's options, and the stack of them.

``glassformer.nn.TransformerStack`` gives every layer the same mask and the same RoPE tables and
wraps each sublayer as ``x + sublayer(norm(x))``. Gemma 3 differs in four ways, each a
:class:`GPTConfig` field, and this stack adds exactly those:

* ``post_norms``: four norms per block, ``x + post_norm(sublayer(pre_norm(x)))``;
* ``qk_norm``: an RMSNorm over each head's query and key before RoPE, which bounds the attention
  logits without Gemma 2's soft-capping;
* ``norm_offset``: every RMSNorm scales by ``1 + weight`` (weights start at zero), computed wholly
  in float32 and cast back at the end (Gemma's order; Llama casts before scaling);
* ``sliding_window`` / ``global_every``: most layers ("local") attend to the last
  ``sliding_window`` keys only, every ``global_every``-th to all of them, and the two kinds rotate
  with their own RoPE base (``rope_local_theta``: 10k, ``rope_theta``: 1M). So the caller hands
  the stack one ``(mask, is_causal)`` and one RoPE table per kind, and each layer takes its own.

Key names match ``TransformerStack``'s (``layers.N.attn.q_proj``, ``layers.N.ffn_norm``, ...) plus
``attn.q_norm``/``attn.k_norm`` and ``post_attn_norm``/``post_ffn_norm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from glassformer.models.gpt.config import GPTConfig
from glassformer.nn.attention import MultiHeadAttention, attention
from glassformer.nn.blocks import StackOutput
from glassformer.nn.cache import KVCache
from glassformer.nn.ffn import FeedForward
from glassformer.nn.norms import make_norm
from glassformer.nn.positional import apply_rotary

Rope = tuple[Tensor, Tensor]


class OffsetRMSNorm(nn.Module):
    """``x / rms(x) * (offset + weight)``, all in float32, cast to the input dtype at the end.

    Gemma stores the scale as its difference from one (``offset=1``, weights initialised to zero),
    so weight decay pulls it towards one rather than towards zero.
    """

    def __init__(self, dim: int, eps: float, offset: float) -> None:
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * (self.offset + self.weight.float())).to(x.dtype)


def gpt_norm(config: GPTConfig, dim: int) -> nn.Module:
    """The norm a config names, with Gemma's offset when ``norm_offset`` is set."""
    if config.norm == "rmsnorm" and config.norm_offset:
        return OffsetRMSNorm(dim, config.norm_eps, config.norm_offset)
    return make_norm(config.norm, dim, config.norm_eps, config.bias)


class SelfAttention(MultiHeadAttention):
    """Causal self-attention with an optional norm over each query and key head (``qk_norm``)."""

    def __init__(self, config: GPTConfig) -> None:
        c = config
        super().__init__(
            c.dim, c.n_heads, c.kv_heads, head_dim=c.head_size, bias=c.bias, dropout=c.dropout,
            scale=c.attn_scale, backend=c.attn_backend,
        )  # fmt: skip
        self.q_norm = gpt_norm(c, c.head_size) if c.qk_norm else None
        self.k_norm = gpt_norm(c, c.head_size) if c.qk_norm else None

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        *,
        mask: Tensor | None,
        is_causal: bool,
        rope: Rope | None,
        cache: KVCache | None,
        layer_idx: int,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k, v = self._project_kv(x)  # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)  # over hd: each head on its own
        if rope is not None:
            q, k = apply_rotary(q, k, *rope)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)  # (B, Hkv, past + T, hd)
        y, weights = attention(
            q, k, v, mask=mask, is_causal=is_causal, scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0, backend=self.backend, return_weights=return_weights,
        )  # fmt: skip
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H*hd)
        return self.o_proj(y), weights


@dataclass
class LayerInputs:
    """What one kind of layer (local or global) attends with: its mask and its RoPE tables."""

    mask: Tensor | None
    is_causal: bool
    rope: Rope | None


class GemmaBlock(nn.Module):
    """``x + post(attn(pre(x)))`` then ``x + post(ffn(pre(x)))``; post norms only with ``post_norms``."""

    def __init__(self, config: GPTConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.local = c.is_local(layer)
        self.attn_norm = gpt_norm(c, c.dim)
        self.attn = SelfAttention(c)
        self.post_attn_norm = gpt_norm(c, c.dim) if c.post_norms else None
        self.ffn_norm = gpt_norm(c, c.dim)
        self.ffn = FeedForward(c.dim, c.ffn_size, c.activation, bias=c.bias)
        self.post_ffn_norm = gpt_norm(c, c.dim) if c.post_norms else None
        self.dropout = nn.Dropout(c.dropout)

    def forward(
        self, x: Tensor, inputs: LayerInputs, cache: KVCache | None, layer_idx: int, return_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        h, weights = self.attn(
            self.attn_norm(x), mask=inputs.mask, is_causal=inputs.is_causal, rope=inputs.rope, cache=cache,
            layer_idx=layer_idx, return_weights=return_weights,
        )  # fmt: skip
        if self.post_attn_norm is not None:
            h = self.post_attn_norm(h)
        x = x + self.dropout(h)  # (B, T, C)
        h = self.ffn(self.ffn_norm(x))
        if self.post_ffn_norm is not None:
            h = self.post_ffn_norm(h)
        return x + self.dropout(h), weights  # (B, T, C)


class GemmaStack(nn.Module):
    """The blocks and the final norm; each layer reads the inputs of its kind (local or global)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GemmaBlock(config, i) for i in range(config.n_layers))
        self.final_norm = gpt_norm(config, config.dim)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: Tensor,
        *,
        local: LayerInputs,
        global_: LayerInputs,
        cache: KVCache | None = None,
        return_weights: bool = False,
    ) -> StackOutput:
        attentions: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            inputs = local if layer.local else global_
            if self.gradient_checkpointing and self.training and cache is None:
                x, weights = torch.utils.checkpoint.checkpoint(
                    layer, x, inputs, None, i, return_weights, use_reentrant=False
                )
            else:
                x, weights = layer(x, inputs, cache, i, return_weights)
            if return_weights:
                attentions.append(weights)
        return StackOutput(self.final_norm(x), attentions if return_weights else None)
