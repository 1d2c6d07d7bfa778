"""Scaled dot-product attention, three ways, and multi-head attention built on it.

``attention(q, k, v, ...)`` computes ``softmax(q k^T * scale + mask + bias) v`` through one of:

* ``"eager"``: written out in full; the only path that can hand back the attention weights
  (for pictures and teaching).
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, which dispatches to fused
  flash / memory-efficient kernels. The default: fastest on CPU and GPU.
* ``"flash"``: a readable tiled implementation of FlashAttention's online softmax in plain
  PyTorch. It walks over key blocks keeping a running max and running sum, so it never holds the
  full ``(query, key)`` score matrix: memory grows linearly with sequence length.

All three agree to float32 rounding (tests/nn/test_attention.py checks it for every mask kind).
Shapes: ``q`` is ``(B, H, Tq, D)``; ``k`` and ``v`` are ``(B, Hkv, Tk, D)`` where ``H`` is a multiple
of ``Hkv`` (grouped-query attention: query head ``h`` reads key/value head ``h // (H // Hkv)``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.nn.masks import causal_mask, check_mask_shape, to_additive
from glassformer.nn.positional import apply_rotary

if TYPE_CHECKING:
    from glassformer.nn.cache import CrossAttentionCache, KVCache

Backend = Literal["eager", "sdpa", "flash"]
BACKENDS: tuple[str, ...] = ("eager", "sdpa", "flash")


def _check_qkv(q: Tensor, k: Tensor, v: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "attention expects q, k, v of shape (batch, heads, seq, head_dim); got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch size or head_dim"
        )
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError(
            f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})"
        )


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``(B, Hkv, T, D) -> (B, Hkv * n_rep, T, D)``: each key/value head serves ``n_rep`` query heads."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def _additive_mask(
    q: Tensor, k: Tensor, mask: Tensor | None, bias: Tensor | None, is_causal: bool
) -> Tensor | None:
    """Fold the causal flag, a bool/float mask and an additive bias into one float mask."""
    b, h, tq, _ = q.shape
    tk = k.shape[2]
    if mask is not None:
        if mask.dtype != torch.bool and not mask.is_floating_point():
            # a 1/0 integer mask would otherwise be added to the scores as a +1/0 bias, silently
            raise TypeError(
                "mask must be bool (True = attend) or floating (additive); got "
                f"{mask.dtype}. Turn a 1/0 attention mask into one with glassformer.nn.masks.padding_mask"
            )
        check_mask_shape(mask, b, h, tq, tk)
    if bias is not None:
        check_mask_shape(bias, b, h, tq, tk)
    bool_mask = None
    float_mask = None
    if is_causal:
        bool_mask = causal_mask(tq, tk, device=q.device)
    if mask is not None:
        if mask.dtype == torch.bool:
            bool_mask = mask if bool_mask is None else (bool_mask & mask)
        else:
            float_mask = mask.to(q.dtype)
    out = to_additive(bool_mask, q.dtype)
    for extra in (float_mask, bias):
        if extra is not None:
            out = extra.to(q.dtype) if out is None else out + extra.to(q.dtype)
    return out


def eager_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """The textbook formula. ``mask`` is additive. Returns ``(output, weights)``."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores + mask
    # Softmax in at least float32 (half precision loses the small weights), but never below the
    # input's own precision: float64 stays float64.
    softmax_dtype = torch.promote_types(scores.dtype, torch.float32)
    weights = torch.softmax(scores, dim=-1, dtype=softmax_dtype).to(q.dtype)  # (B, H, Tq, Tk)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (B, H, Tq, D)


def _tile(t: Tensor, rows: slice, cols: slice) -> Tensor:
    """Slice the last two dims of a broadcastable mask, leaving size-1 dims alone."""
    r = rows if t.shape[-2] != 1 else slice(None)
    c = cols if t.shape[-1] != 1 else slice(None)
    return t[..., r, c]


def flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    scale: float | None = None,
    is_causal: bool = False,
    block_size: int = 128,
) -> Tensor:
    """Tiled attention with an online softmax (Dao et al. 2022, algorithm 1), in plain PyTorch.

    For each block of queries we stream over blocks of keys. After each key block we know the
    running row maximum ``m``, the running sum of ``exp(s - m)`` and the running weighted sum of
    values; when a later block raises the maximum, the earlier sums are rescaled by
    ``exp(m_old - m_new)``. At the end the weighted sum divided by the sum is exactly softmax @ v.
    Only ``(block, block)`` scores exist at any time. ``mask`` is additive; with ``is_causal`` and no
    other mask, key blocks entirely in the future are skipped.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    b, h, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    n_rep = h // hkv
    # Group query heads by the key/value head they share: (B, Hkv, n_rep*Tq, D) lets one matmul
    # serve a whole group without copying k and v.
    offset = tk - tq  # queries are the last tq positions (decoding with a cache)
    neg = torch.finfo(q.dtype).min
    out = torch.empty_like(q)
    skip_future = is_causal and mask is None
    for qs in range(0, tq, block_size):
        qe = min(qs + block_size, tq)
        qi = q[:, :, qs:qe] * scale  # (B, H, bq, D)
        bq = qe - qs
        qi = qi.reshape(b, hkv, n_rep * bq, d)  # (B, Hkv, n_rep*bq, D)
        m = torch.full((b, hkv, n_rep * bq, 1), neg, dtype=q.dtype, device=q.device)
        denom = torch.zeros((b, hkv, n_rep * bq, 1), dtype=q.dtype, device=q.device)
        acc = torch.zeros((b, hkv, n_rep * bq, d), dtype=q.dtype, device=q.device)
        for ks in range(0, tk, block_size):
            if skip_future and ks > qe - 1 + offset:
                break  # every key in this block is in the future of every query in the block
            ke = min(ks + block_size, tk)
            kj, vj = k[:, :, ks:ke], v[:, :, ks:ke]  # (B, Hkv, bk, D)
            s = qi @ kj.transpose(-2, -1)  # (B, Hkv, n_rep*bq, bk)
            s = s.view(b, h, bq, ke - ks)
            if mask is not None:
                s = s + _tile(mask, slice(qs, qe), slice(ks, ke))
            if is_causal:
                qpos = torch.arange(qs, qe, device=q.device)[:, None] + offset
                kpos = torch.arange(ks, ke, device=q.device)[None, :]
                s = s.masked_fill(kpos > qpos, neg)
            s = s.reshape(b, hkv, n_rep * bq, ke - ks)
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
            p = torch.exp(s - m_new)  # (B, Hkv, n_rep*bq, bk)
            correction = torch.exp(m - m_new)
            denom = denom * correction + p.sum(dim=-1, keepdim=True)
            acc = acc * correction + p @ vj
            m = m_new
        out[:, :, qs:qe] = (acc / denom).view(b, h, bq, d)
    return out


def grouped_query_attention(q: Tensor, k: Tensor, v: Tensor, scale: float | None, dropout_p: float) -> Tensor:
    """Unmasked GQA without copying keys and values: the ``n_rep`` query heads that share a key head
    become ``n_rep`` times as many queries of that head, ``(B, H, Tq, D) -> (B, Hkv, n_rep * Tq, D)``.
    Exact (each query still attends to its own group's keys); a decoding step saves the
    ``repeat_kv`` copy of the whole cache in every layer."""
    b, h, tq, d = q.shape
    grouped = q.reshape(b, k.shape[1], (h // k.shape[1]) * tq, d)  # head h = g * n_rep + r
    out = F.scaled_dot_product_attention(grouped, k, v, dropout_p=dropout_p, scale=scale)
    return out.reshape(b, h, tq, v.shape[-1])  # (B, H, Tq, Dv)


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "sdpa",
    return_weights: bool = False,
    block_size: int = 128,
) -> tuple[Tensor, Tensor | None]:
    """Scaled dot-product attention. Returns ``(output (B, H, Tq, D), weights or None)``.

    ``mask``: bool (True = attend) or additive float, broadcastable to ``(B, H, Tq, Tk)``.
    ``bias``: an additive float bias (relative position bias, ALiBi), same broadcasting.
    ``is_causal``: queries are the last ``Tq`` of ``Tk`` positions and see no later key.
    ``return_weights`` forces the eager path, the only one that forms the weights.
    """
    _check_qkv(q, k, v)
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
    if return_weights or backend == "eager":
        add = _additive_mask(q, k, mask, bias, is_causal)
        out, weights = eager_attention(q, k, v, add, scale, dropout_p)
        return out, (weights if return_weights else None)
    if backend == "flash":
        if dropout_p > 0.0:
            raise ValueError("the tiled flash path does not implement attention dropout; use backend='sdpa'")
        add = _additive_mask(q, k, mask, bias, is_causal=False)
        return flash_attention(q, k, v, add, scale, is_causal=is_causal, block_size=block_size), None
    # SDPA. Its own is_causal aligns the mask top-left, which is only right when Tq == Tk.
    tq, tk = q.shape[2], k.shape[2]
    if is_causal and tq == 1:
        is_causal = False  # one query at the last position (a decoding step) sees every key
    if mask is None and bias is None and (not is_causal or tq == tk):
        add, causal_flag = None, is_causal
    else:
        add, causal_flag = _additive_mask(q, k, mask, bias, is_causal), False
    if q.shape[1] != k.shape[1]:
        n_rep = q.shape[1] // k.shape[1]
        if add is None and not causal_flag and q.device.type != "cuda":
            return grouped_query_attention(q, k, v, scale, dropout_p), None
        if add is not None or q.device.type != "cuda":
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=causal_flag, dropout_p=dropout_p, scale=scale, enable_gqa=True
            )
            return out, None
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=add, is_causal=causal_flag, dropout_p=dropout_p, scale=scale
    )
    return out, None


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections; MHA, GQA and MQA by ``n_kv_heads``.

    Self-attention when ``context`` is None, cross-attention otherwise (keys and values come from
    ``context``, e.g. the encoder output). Rotary embeddings, when given as ``rope=(cos, sin)``, are
    applied to q and k before the KV cache stores k, so cached keys are already rotated.

    ``context_cache`` (cross-attention over a context that stays the same from call to call, as
    the encoder output does while decoding): the first call stores the context's keys and values
    for ``layer_idx``, later calls reuse them and skip the ``k_proj``/``v_proj`` projections.
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        head_dim: int | None = None,
        kv_dim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        scale: float | None = None,
        backend: Backend = "sdpa",
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if n_heads <= 0 or n_kv_heads <= 0:
            raise ValueError(f"n_heads ({n_heads}) and n_kv_heads ({n_kv_heads}) must be positive")
        if head_dim is None:
            if dim % n_heads != 0:
                raise ValueError(f"dim={dim} is not divisible by n_heads={n_heads}")
            head_dim = dim // n_heads
        if n_heads % n_kv_heads != 0:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; expected one of {BACKENDS}")
        self.dim, self.n_heads, self.n_kv_heads, self.head_dim = dim, n_heads, n_kv_heads, head_dim
        self.scale = scale
        self.dropout = dropout
        self.backend: Backend = backend
        kv_dim = dim if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=bias if out_bias is None else out_bias)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        context_cache: CrossAttentionCache | None = None,
        layer_idx: int = 0,
        return_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"attention input must be (batch, seq, {self.dim}); got {tuple(x.shape)}")
        # a plain nn.Linear only: a quantized projection takes any float input, and reading its
        # .weight would dequantize the whole matrix at every decoding step
        if isinstance(self.q_proj, nn.Linear) and x.dtype != self.q_proj.weight.dtype:
            raise TypeError(
                f"input dtype {x.dtype} does not match the layer's {self.q_proj.weight.dtype} weights; "
                "convert one of them (model.to(dtype) or x.to(dtype))"
            )
        if context_cache is not None and (context is None or rope is not None):
            raise ValueError(
                "context_cache keeps the keys and values of a fixed context (cross-attention): pass "
                "context= and no rope= with it"
            )
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        cached = None if context_cache is None else context_cache.get(layer_idx)
        if cached is not None:
            k, v = cached  # (B, Hkv, S, hd), projected on the first call
        else:
            k, v = self._project_kv(x if context is None else context)
            if context_cache is not None:
                context_cache.store(layer_idx, k, v)
        if rope is not None:
            q, k = apply_rotary(q, k, *rope)
        if cache is not None:
            k, v = cache.update(layer_idx, k, v)  # (B, Hkv, past + T, hd)
        y, weights = attention(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            is_causal=is_causal,
            scale=self.scale,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
            return_weights=return_weights,
        )
        y = y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H*hd)
        return self.o_proj(y), weights

    def _project_kv(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, S, kv_dim)`` -> keys and values ``(B, Hkv, S, hd)``."""
        b, s, _ = src.shape
        k = self.k_proj(src).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(src).view(b, s, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return k, v

