"""llama.cpp's k-quants Q4_K and Q6_K, dequantized to float32 with NumPy.

A k-quant "super-block" covers 256 weights of one row and splits it into sub-blocks that share
a small integer scale; the super-block stores one float16 factor per kind of scale. So a weight
costs 4.5 bits (Q4_K) or 6.5625 bits (Q6_K) instead of 16.

``Q4_K`` (144 bytes per 256 weights: Q4_K_M files use it for most matrices)::

    d: f16 | dmin: f16 | scales: 12 bytes (8 six-bit scales, 8 six-bit minimums) | qs: 128 bytes

eight sub-blocks of 32; weight = ``d * scale[j] * q - dmin * min[j]`` with ``q`` in 0..15. Sub-block
pair ``(2i, 2i+1)`` reads the low then the high nibbles of the same 32 bytes ``qs[32i : 32i+32]``.
The 6-bit numbers are packed so that the first four of each kind sit whole in the low six bits of
bytes 0-3 (scales) and 4-7 (minimums); the last four keep their low four bits in a nibble of bytes
8-11 and their top two bits in the spare top bits of bytes 0-7.

``Q6_K`` (210 bytes per 256 weights: Q4_K_M keeps it for the sensitive ``ffn_down``/``attn_v``)::

    ql: 128 bytes (low 4 bits) | qh: 64 bytes (high 2 bits) | scales: 16 x int8 | d: f16

sixteen sub-blocks of 16; weight = ``d * scale[j] * (q - 32)`` with ``q`` in 0..63. Each half of
128 weights reads 64 ``ql`` bytes (low nibbles of bytes 0-31 and 32-63, then their high nibbles)
and 32 ``qh`` bytes (bit pairs 0-1, 2-3, 4-5, 6-7 for the four runs of 32).

The products are formed in float32 in llama.cpp's order, ``(d * scale) * q - (dmin * min)``,
so the results equal ``ggml``'s (and the ``gguf`` package's) bit for bit.
"""

from __future__ import annotations

import numpy as np

QK_K = 256  # weights per super-block
Q4_K_BYTES = 144
Q6_K_BYTES = 210


def _blocks(data: np.ndarray, block_bytes: int, name: str) -> np.ndarray:
    """``(n_blocks, block_bytes)`` uint8 view of a tensor's raw bytes, checked."""
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if raw.size % block_bytes:
        raise ValueError(f"{name}: {raw.size} bytes is not a whole number of {block_bytes}-byte blocks")
    return raw.reshape(-1, block_bytes)


def _f16(column: np.ndarray) -> np.ndarray:
    """Two bytes per row -> ``(n, 1)`` float32."""
    return np.ascontiguousarray(column).view(np.float16).astype(np.float32)


def q4_k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 packed bytes of each block -> ``(scales, minimums)``, each ``(n, 8)`` in 0..63."""
    low = packed[:, 0:4]  # scales 0-3 (low 6 bits); top 2 bits: high bits of scales 4-7
    mid = packed[:, 4:8]  # minimums 0-3 (low 6 bits); top 2 bits: high bits of minimums 4-7
    nib = packed[:, 8:12]  # low nibble: scales 4-7, high nibble: minimums 4-7
    scales = np.concatenate([low & 0x3F, (nib & 0x0F) | ((low >> 6) << 4)], axis=1)
    mins = np.concatenate([mid & 0x3F, (nib >> 4) | ((mid >> 6) << 4)], axis=1)
    return scales, mins


def dequantize_q4_k(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Raw Q4_K bytes -> float32 array of ``shape`` (row-major, rows of whole super-blocks)."""
    blocks = _blocks(data, Q4_K_BYTES, "Q4_K")
    n = blocks.shape[0]
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])  # (n, 1)
    scales, mins = q4_k_scales(blocks[:, 4:16])  # (n, 8)
    qs = blocks[:, 16:].reshape(n, 4, 32)  # four runs of 32 bytes
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(n, 8, 32).astype(np.float32)  # sub-block j = 2i + nibble
    step = (d * scales.astype(np.float32))[:, :, None]  # (n, 8, 1)
    offset = (dmin * mins.astype(np.float32))[:, :, None]
    return _shaped(step * q - offset, shape, "Q4_K")


def dequantize_q6_k(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Raw Q6_K bytes -> float32 array of ``shape``."""
    blocks = _blocks(data, Q6_K_BYTES, "Q6_K")
    n = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(n, 2, 2, 32)  # (half, which 32 bytes, byte)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)  # (half, -, byte)
    scales = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)  # (n, 16)
    d = _f16(blocks[:, 208:210])  # (n, 1)
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # runs 0..3 of a half: bytes 0-31, 32-63, then high nibbles
    high = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & 0x03  # (n, 2, 4, 32)
    q = ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(np.float32)  # (n, 2, 4, 32)
    step = (d * scales).reshape(n, 2, 4, 2, 1)  # sub-blocks of 16: two per run of 32
    return _shaped(step * q.reshape(n, 2, 4, 2, 16), shape, "Q6_K")


def _shaped(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = int(np.prod(shape))
    if values.size != count:
        raise ValueError(f"{name}: the blocks hold {values.size} weights but the tensor's shape {shape} needs {count}")
    return values.reshape(shape)


DEQUANTIZERS = {"Q4_K": dequantize_q4_k, "Q6_K": dequantize_q6_k}
