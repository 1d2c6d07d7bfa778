"""8-bit weights: symmetric per-output-channel int8, and LLM.int8()'s outlier decomposition.

Weight-only int8 (what decoding uses): each row ``r`` of a ``(out_features, in_features)``
weight (one output channel) keeps ``scale[r] = absmax(row) / 127`` and ``q = round(w / scale)``
in [-127, 127], so ``|w - q * scale| <= scale / 2``.

Packed layout (what a matrix-vector kernel reads; ``glassformer.kernels`` relies on it):

* ``qweight``: int8, ``(out_features, in_features)``, row-major (row ``r`` = output ``r``).
* ``scale``: float32, ``(out_features,)``; ``y[r] = scale[r] * sum_k q[r, k] * x[k] + bias[r]``.

The codes equal ``bitsandbytes.functional.int8_vectorwise_quant`` (its ``row_stats`` is our
``absmax = 127 * scale``): both compute ``round(w * (127 / absmax))`` in float32, round half to
even. bitsandbytes dequantizes as ``q * absmax * (1/127)``; we multiply by the stored scale, so
the two dequantized weights differ by float32 rounding (a few ulp), never by a code.

LLM.int8() (Dettmers et al. 2022) for activations ``x (N, in)``: the columns of ``x`` holding any
``|x| >= threshold`` (6.0) are kept in float and multiplied by the matching dequantized weight
columns; the rest of ``x`` is quantized per row (``row absmax / 127``) and multiplied in int32
with the int8 weight, then scaled by ``row_scale (N, 1) * weight_scale (1, out)``. This mirrors
bitsandbytes' ``int8_vectorwise_quant(x, threshold)`` + ``int8_mixed_scaled_mm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

THRESHOLD = 6.0
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Int8Rows:
    """Row-wise symmetric int8 codes and their float32 scales (``absmax / 127``)."""

    q: Tensor  # (rows, cols) int8
    scale: Tensor  # (rows,) float32

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return (self.q.float() * self.scale.unsqueeze(1)).to(dtype)  # (rows, cols)


def _check_matrix(x: Tensor, what: str) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what}: dtype {x.dtype} cannot be quantized; pass float32, float16 or bfloat16")
    if x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D (rows, columns) tensor, got shape {tuple(x.shape)}")


def quantize_rows(x: Tensor) -> Int8Rows:
    """Symmetric int8 per row: ``q = round(x * 127 / absmax)``; an all-zero row keeps scale 0."""
    _check_matrix(x, "quantize_rows")
    x = x.float()
    absmax = x.abs().amax(dim=1)  # (rows,)
    q = torch.round(x * (127.0 / absmax).unsqueeze(1))
    q = torch.nan_to_num(q, nan=0.0).to(torch.int8)  # 0/0 in an all-zero row
    return Int8Rows(q, absmax / 127.0)


def outlier_columns(x: Tensor, threshold: float = THRESHOLD) -> Tensor:
    """Indices (int64) of the columns of ``x (N, in)`` holding a value with ``|v| >= threshold``."""
    return torch.nonzero((x.abs() >= threshold).any(dim=0)).flatten()


def int8_matmul(x: Tensor, weight: Int8Rows, threshold: float | None = THRESHOLD) -> Tensor:
    """``x (N, in) @ W.T`` the LLM.int8() way: int8 x int8 -> int32, outlier columns in float32.

    ``threshold=None`` quantizes every column (no decomposition). The result is float32 ``(N, out)``.
    """
    if x.dim() != 2 or x.shape[1] != weight.q.shape[1]:
        raise ValueError(f"int8_matmul: x has shape {tuple(x.shape)}; expected (N, {weight.q.shape[1]})")
    x = x.float()
    cols = outlier_columns(x, threshold) if threshold is not None else x.new_empty(0, dtype=torch.long)
    inliers = x.clone()
    inliers[:, cols] = 0.0  # the outlier columns go the float way only
    rows = quantize_rows(inliers)
    acc = rows.q.double() @ weight.q.double().T  # (N, out): int32 sums, exact in float64
    out = acc.float() * (rows.scale.unsqueeze(1) * weight.scale.unsqueeze(0))  # (N, out)
    if cols.numel():
        w_cols = weight.q[:, cols].float() * weight.scale.unsqueeze(1)  # (out, outliers)
        out = out + x[:, cols] @ w_cols.T
    return out
