"""The C side of a fused decoding step (``decode.c``): its structures, and the call.

``decode.c`` runs one new token at batch 1 through every block of a pre-norm stack whose linear
layers are quantized, in one call; :mod:`glassformer.quant.decode` fills these structures
from a model's layers. This module knows only the memory layout: pointers and sizes.
"""

from __future__ import annotations

import ctypes

from torch import Tensor

from glassformer.kernels.build import load

INT8, INT4 = 0, 1  # GfQLinear.kind


class QLinearArgs(ctypes.Structure):
    """``GfQLinear``: one quantized layer's buffers (int8: scale + rowsum; 4-bit: block scales + code)."""

    _fields_ = [("kind", ctypes.c_int64), ("in_features", ctypes.c_int64), ("out_features", ctypes.c_int64),
                ("weight", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("rowsum", ctypes.c_void_p),
                ("code", ctypes.c_void_p), ("bias", ctypes.c_void_p)]  # fmt: skip


class BlockArgs(ctypes.Structure):
    """``GfBlock``: one block's norms, its seven layers (``gate`` unused when not gated) and its
    slice of the KV cache."""

    _fields_ = [*((name, ctypes.c_void_p) for name in ("attn_norm", "attn_norm_bias", "ffn_norm", "ffn_norm_bias")),
                *((name, QLinearArgs) for name in ("q", "k", "v", "o", "gate", "up", "down")),
                ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p)]  # fmt: skip


NORMS = {"rmsnorm": 0, "layernorm": 1}  # GfStackShape.norm
ACTIVATIONS = {"silu": 0, "gelu": 1, "gelu_tanh": 2, "relu": 3}  # GfStackShape.act


class StackShape(ctypes.Structure):
    """``GfStackShape``: the sizes and choices every block shares, and the final norm (None: none)."""

    _fields_ = [*((name, ctypes.c_int64) for name in ("n_layers", "dim", "n_heads", "n_kv_heads", "head_dim",
                                                      "ffn_dim", "max_len", "norm", "act", "gated")),
                ("eps", ctypes.c_float), ("scale", ctypes.c_float),
                ("final_norm", ctypes.c_void_p), ("final_norm_bias", ctypes.c_void_p)]  # fmt: skip


def decode_step(blocks: ctypes.Array, shape: StackShape, x: Tensor, rope: tuple[Tensor, Tensor] | None, pos: int,
                lib: ctypes.CDLL | None = None) -> None:  # fmt: skip
    """Run every block on ``x`` (``(dim,)`` float32, contiguous, overwritten with the output) at
    cache row ``pos``; ``rope``: ``(head_dim,)`` float32 cos and sin at that position, or None.
    ``lib``: the library of one instruction-set path (``build.load(isa)``; default: the one in use)."""
    lib = load() if lib is None else lib
    if lib is None:
        raise RuntimeError("the glassformer C kernels are not available; decode with the blocks' own forward")
    cos, sin = (None, None) if rope is None else (t.data_ptr() for t in rope)
    code = lib.gf_decode_step(ctypes.byref(blocks), ctypes.byref(shape), x.data_ptr(), cos, sin, pos)
    if code == -2:
        raise MemoryError("decode_step: no memory left for the step's scratch buffers")
    if code != 0:
        raise ValueError(f"decode_step: the kernel refused its arguments (code {code}; cache row {pos} of "
                         f"{shape.max_len})")  # fmt: skip
