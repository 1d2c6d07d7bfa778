"""Key/value caches for incremental decoding.

During generation each new token only needs its own query, but it attends to the keys and values
of every earlier token. A cache keeps them per layer so they are computed once. Two kinds:

* ``DynamicCache`` appends with ``torch.cat``: simple, grows as needed.
* ``StaticCache`` writes into buffers preallocated for ``max_len`` positions: no reallocation per
  step, a fixed memory footprint, and fixed shapes that suit ``torch.compile``.

Both expose ``update(layer_idx, k, v) -> (all_k, all_v)``, ``seq_len()`` (positions already
stored), ``reorder(index)`` (beam search keeps the rows of the surviving beams) and
``crop(length)`` (forget positions from ``length`` on: speculative decoding drops rejected drafts).

An encoder-decoder needs two more things per decoder layer. Its cross-attention reads keys and
values of the encoder output, which does not change while decoding: ``CrossAttentionCache``
keeps them from the first step on, so they are projected once instead of once per token.
``EncoderDecoderCache`` pairs it with a self-attention cache so that ``reorder`` (beam search)
moves both, and ``EncoderState`` is the encoder output and source padding mask the decoder
attends to, reordered the same way.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Interface shared by the caches; keys/values are ``(B, Hkv, T, head_dim)``."""

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def seq_len(self, layer_idx: int = 0) -> int:
        raise NotImplementedError

    def reorder(self, index: Tensor) -> None:
        raise NotImplementedError

    def crop(self, length: int) -> None:
        raise NotImplementedError


class DynamicCache(KVCache):
    """A list of growing tensors, one pair per layer."""

    def __init__(self) -> None:
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        elif layer_idx < len(self.keys):
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], k], dim=2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], v], dim=2)
        else:
            raise IndexError(f"cache has {len(self.keys)} layers; layer {layer_idx} updated out of order")
        return self.keys[layer_idx], self.values[layer_idx]

    def seq_len(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].shape[2] if layer_idx < len(self.keys) else 0

    def reorder(self, index: Tensor) -> None:
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]

    def crop(self, length: int) -> None:
        self.keys = [k[:, :, :length] for k in self.keys]
        self.values = [v[:, :, :length] for v in self.values]


class StaticCache(KVCache):
    """Preallocated ``(n_layers, B, Hkv, max_len, head_dim)`` buffers written in place."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = [0] * n_layers
        self.max_len = max_len

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        start = self.lengths[layer_idx]
        end = start + k.shape[2]
        if end > self.max_len:
            raise ValueError(
                f"static cache holds max_len={self.max_len} positions; writing {k.shape[2]} more after "
                f"{start} would overflow it. Create it with a larger max_len."
            )
        if k.shape[0] != self.k.shape[1] or k.shape[1] != self.k.shape[2]:
            raise ValueError(
                f"static cache was made for batch {self.k.shape[1]} with {self.k.shape[2]} kv heads; "
                f"got keys of shape {tuple(k.shape)}"
            )
        self.k[layer_idx, :, :, start:end] = k
        self.v[layer_idx, :, :, start:end] = v
        self.lengths[layer_idx] = end
        return self.k[layer_idx, :, :, :end], self.v[layer_idx, :, :, :end]

    def seq_len(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]

    def reorder(self, index: Tensor) -> None:
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)

    def crop(self, length: int) -> None:
        self.lengths = [min(n, length) for n in self.lengths]  # later writes overwrite the rest


class CrossAttentionCache:
    """Per-layer keys/values ``(B, Hkv, S, head_dim)`` of a context that stays fixed (the encoder output).

    Filled by ``MultiHeadAttention(..., context_cache=)`` on its first call for a layer and read
    on every later call, so the context's key/value projections run once per generation.
    """

    def __init__(self) -> None:
        self.keys: dict[int, Tensor] = {}
        self.values: dict[int, Tensor] = {}

    def get(self, layer_idx: int) -> tuple[Tensor, Tensor] | None:
        """The stored ``(k, v)`` of a layer, or None before its first call."""
        if layer_idx not in self.keys:
            return None
        return self.keys[layer_idx], self.values[layer_idx]

    def store(self, layer_idx: int, k: Tensor, v: Tensor) -> None:
        self.keys[layer_idx] = k
        self.values[layer_idx] = v

    def reorder(self, index: Tensor) -> None:
        self.keys = {i: k.index_select(0, index) for i, k in self.keys.items()}
        self.values = {i: v.index_select(0, index) for i, v in self.values.items()}


class EncoderDecoderCache(KVCache):
    """A decoder's self-attention cache and its cross-attention cache, reordered together.

    ``update``, ``seq_len`` and ``crop`` act on the self-attention part (the only one that grows);
    ``reorder`` moves the rows of both, so a beam keeps the source it was decoding.
    """

    def __init__(self, self_attn: KVCache, cross_attn: CrossAttentionCache | None = None) -> None:
        self.self_attn = self_attn
        self.cross_attn = CrossAttentionCache() if cross_attn is None else cross_attn

    @classmethod
    def empty(
        cls, kind: str, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int, like: Tensor
    ) -> EncoderDecoderCache:
        """A fresh cache for ``generate``: a ``dynamic`` or ``static`` self-attention part (dtype and
        device of ``like``, a weight of the model) and an empty cross-attention part."""
        if kind == "dynamic":
            return cls(DynamicCache())
        if kind != "static":
            raise ValueError(f"unknown cache kind {kind!r}; expected 'dynamic' or 'static'")
        self_attn = StaticCache(n_layers, batch_size, n_heads, max_len, head_dim, dtype=like.dtype, device=like.device)
        return cls(self_attn)

    def update(self, layer_idx: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.self_attn.update(layer_idx, k, v)

    def seq_len(self, layer_idx: int = 0) -> int:
        return self.self_attn.seq_len(layer_idx)

    def reorder(self, index: Tensor) -> None:
        self.self_attn.reorder(index)
        self.cross_attn.reorder(index)

    def crop(self, length: int) -> None:
        self.self_attn.crop(length)


class EncoderState:
    """What a decoder step needs of the encoder: its output ``(B, S, C)`` and the source mask ``(B, S)``.

    Computed once per generation; ``reorder`` keeps it aligned with the decoder's rows when beam
    search expands each source into beams and then follows the surviving ones.
    """

    def __init__(self, hidden: Tensor, attention_mask: Tensor | None = None) -> None:
        self.hidden = hidden
        self.attention_mask = attention_mask

    def reorder(self, index: Tensor) -> None:
        self.hidden = self.hidden.index_select(0, index)
        if self.attention_mask is not None:
            self.attention_mask = self.attention_mask.index_select(0, index)
