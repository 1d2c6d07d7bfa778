"""The C side of a fused decoding step (``decode.c``): its structures, and the call.

``decode.c`` runs one new token at batch 1 through every block of a Llama-style stack whose
linear layers are quantized, in one call; :mod:`glassformer.quant.decode` fills these structures
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
    """``GfBlock``: one block's norm weights, its seven layers and its slice of the KV cache."""

    _fields_ = [("attn_norm", ctypes.c_void_p), ("ffn_norm", ctypes.c_void_p),
                *((name, QLinearArgs) for name in ("q", "k", "v", "o", "gate", "up", "down")),
                ("k_cache", ctypes.c_void_p), ("v_cache", ctypes.c_void_p)]  # fmt: skip


class StackShape(ctypes.Structure):
    """``GfStackShape``: the sizes every block shares, the norms' epsilon and the attention scale."""

    _fields_ = [*((name, ctypes.c_int64) for name in ("n_layers", "dim", "n_heads", "n_kv_heads", "head_dim",
                                                      "ffn_dim", "max_len")),
                ("eps", ctypes.c_float), ("scale", ctypes.c_float)]  # fmt: skip


def decode_step(blocks: ctypes.Array, shape: StackShape, final_norm: Tensor | None, x: Tensor, cos: Tensor,
                sin: Tensor, pos: int) -> None:  # fmt: skip
    """Run every block on ``x`` (``(dim,)`` float32, contiguous, overwritten with the output) at
    cache row ``pos``; ``cos``/``sin``: ``(head_dim,)`` float32 at that position."""
    lib = load()
    if lib is None:
        raise RuntimeError("the glassformer C kernels are not available; decode with the blocks' own forward")
    norm = None if final_norm is None else final_norm.data_ptr()
    code = lib.gf_decode_step(ctypes.byref(blocks), ctypes.byref(shape), norm, x.data_ptr(), cos.data_ptr(),
                              sin.data_ptr(), pos)  # fmt: skip
    if code == -2:
        raise MemoryError("decode_step: no memory left for the step's scratch buffers")
    if code != 0:
        raise ValueError(f"decode_step: the kernel refused its arguments (code {code}; cache row {pos} of "
                         f"{shape.max_len})")  # fmt: skip
