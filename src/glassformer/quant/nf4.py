"""4-bit weights as in QLoRA: NF4 (or FP4) codes, block-wise absmax, double-quantized scales.

A weight is flattened in row-major order and cut into blocks of ``blocksize`` (64) values. Each
block is divided by its absolute maximum, so it lies in [-1, 1], and each value becomes the index
of the nearest of 16 code values (:data:`NF4_CODE`: quantiles of a normal distribution, so that
normally distributed weights use the 16 levels equally often). Double quantization stores the
per-block absmax (one float32 per 64 weights = 0.5 bit per weight) as 8 bits instead: their mean
is subtracted (``offset``) and the rest is quantized in blocks of 256 scales with the
signed 8-bit dynamic code of :func:`dynamic_code` (0.127 bit per weight in all).

Packed layout (what a matrix-vector kernel reads; ``glassformer.kernels`` relies on it):

* ``packed``: uint8, ``ceil(numel / 2)`` bytes. Byte ``k`` holds element ``2k`` in its HIGH
  nibble and element ``2k + 1`` in its LOW nibble (element order = row-major flattening of the
  ``(out_features, in_features)`` weight). An odd ``numel`` pads one code of 0.0.
* ``absmax_q``: uint8, one per block of ``blocksize`` elements (block ``b`` = elements
  ``b*blocksize .. (b+1)*blocksize - 1``); with ``in_features % blocksize == 0`` row ``r``'s
  blocks are ``r * in_features / blocksize ...``, so no block crosses a row.
* ``absmax_scale``: float32, one per 256 blocks; ``absmax_offset``: float32 scalar.
* block ``b``'s scale = ``dynamic_code()[absmax_q[b]] * absmax_scale[b // 256] + absmax_offset``;
  element ``i`` = ``code[nibble(i)] * scale[i // blocksize]`` computed in float32.

Everything here equals ``bitsandbytes`` 0.50 (``quantize_4bit(..., compress_statistics=True)``
and ``dequantize_4bit``) bit for bit on the CPU, because each step does the same float32
operations in the same order (see ``tests/quant/test_quant_nf4.py``):

* 4-bit codes: scaled = ``clamp(x * (1 / absmax), -1, 1)`` (a multiply by the reciprocal, not a
  division: the two differ in the last bit for some values), then the index of the interval
  between midpoints of adjacent code values; a value exactly on a midpoint takes the LOWER code.
  A final partial block is divided (``x / absmax``), as bitsandbytes does there.
* 8-bit scale codes: normed = ``clamp(x * (1 / absmax), -1, 1)``, rounded to one of 65536 grid
  points whose code is precomputed (:func:`_lut_for_8bit`): bitsandbytes' CPU kernel works so, and
  it is not always the nearest code (a value within about 1.5e-5 of a midpoint may take the
  farther neighbour); we reproduce the table rather than search, so the codes are the same.
* The offset is ``torch.mean`` of the float32 absmax; its summation order is torch's, the same
  call bitsandbytes makes.
* Dequantized values are ``code * scale`` in float32, rounded once to the output dtype (round to
  nearest even, as bitsandbytes' C converters do for bf16 and fp16).

No difference remains on the shapes and dtypes the tests try (odd sizes and partial blocks
included). A block of zeros stores absmax 0 and codes of 0.0 (4-bit) or code 0 (8-bit) in both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

QuantType = Literal["nf4", "fp4"]
BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# NF4: the 16 quantiles of N(0, 1) normalised to [-1, 1], with an exact zero (QLoRA, appendix E).
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
], dtype=torch.float32)  # fmt: skip
# FP4 (1 sign, 2 exponent, 1 mantissa bits; bitsandbytes' bias): magnitudes in twelfths, index
# bit 3 is the sign, so codes 0..7 are the positive values and 8..15 their negatives.
_FP4_TWELFTHS = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)
FP4_CODE = torch.tensor([*_FP4_TWELFTHS, *(-v for v in _FP4_TWELFTHS)], dtype=torch.float32) / 12.0


def code_table(quant_type: QuantType) -> Tensor:
    """The 16 float32 values a 4-bit code stands for, indexed by the code."""
    if quant_type == "nf4":
        return NF4_CODE
    if quant_type == "fp4":
        return FP4_CODE
    raise ValueError(f"quant_type {quant_type!r}: choose 'nf4' or 'fp4'")


@functools.cache
def dynamic_code() -> Tensor:
    """bitsandbytes' signed 8-bit dynamic code (256 sorted float32 values in [-1, 1]).

    Dynamic tree quantization (Dettmers 2015): for exponent ``e = 0..6`` there are ``2**e``
    mantissa steps, the midpoints of ``linspace(0.1, 1, 2**e + 1)`` (float32) scaled by
    ``10**(e - 6)``, each with both signs; plus 0 and 1. Every step is a float32 tensor operation,
    as in bitsandbytes, so the table is the same bits.
    """
    values: list[float] = [0.0, 1.0]
    for e in range(7):
        edges = torch.linspace(0.1, 1, 2**e + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0  # (2**e,) float32
        scale = 10.0 ** (e - 6)
        values += (scale * mids).tolist() + (-scale * mids).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


@dataclass(frozen=True)
class Packed4bit:
    """A tensor quantized to 4 bits with double-quantized scales (layout: module docstring)."""

    packed: Tensor  # (ceil(numel / 2),) uint8
    absmax_q: Tensor  # (blocks,) uint8
    absmax_scale: Tensor  # (ceil(blocks / 256),) float32
    absmax_offset: Tensor  # () float32
    shape: tuple[int, ...]
    dtype: torch.dtype
    quant_type: QuantType = "nf4"
    blocksize: int = BLOCKSIZE

    def absmax(self) -> Tensor:
        """The per-block float32 absmax, undoing the double quantization."""
        return dequantize_blockwise(self.absmax_q, self.absmax_scale) + self.absmax_offset

    def nbytes(self) -> int:
        """Bytes of the packed tensors (what a file or the memory holds for this weight)."""
        return sum(t.numel() * t.element_size() for t in (self.packed, self.absmax_q, self.absmax_scale,
                                                           self.absmax_offset))  # fmt: skip


def _check_float(x: Tensor, what: str) -> None:
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{what}: dtype {x.dtype} cannot be quantized; pass float32, float16 or bfloat16")
    if x.numel() == 0:
        raise ValueError(f"{what}: empty tensor of shape {tuple(x.shape)}; nothing to quantize")


def _blocks(flat: Tensor, blocksize: int) -> tuple[Tensor, Tensor | None]:
    """The full blocks ``(n // blocksize, blocksize)`` and the remainder (or None)."""
    full = flat.numel() - flat.numel() % blocksize
    rest = flat[full:] if full < flat.numel() else None
    return flat[:full].reshape(-1, blocksize), rest


def _scaled_for_4bit(flat: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    """Each value over its block's absmax, in [-1, 1], and the float32 absmax per block."""
    full, rest = _blocks(flat, blocksize)
    absmax = full.abs().amax(dim=-1) if full.numel() else flat.new_empty(0)  # (blocks,)
    scaled = torch.clamp(full * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1), -1, 1).reshape(-1)
    if rest is not None:
        last = rest.abs().amax().clamp(min=1e-38)
        absmax = torch.cat([absmax, last.reshape(1)])
        scaled = torch.cat([scaled, torch.clamp(rest / last, -1, 1)])
    return scaled, absmax


def _nearest_4bit(scaled: Tensor, code: Tensor) -> Tensor:
    """Index of the nearest code value; on a midpoint, the lower of the two (sorted order)."""
    order = torch.argsort(code)
    ordered = code[order]
    midpoints = (ordered[:-1] + ordered[1:]) / 2
    return order[torch.bucketize(scaled, midpoints)].to(torch.uint8)


@functools.cache
def _lut_for_8bit() -> Tensor:
    """Codes of 65536 evenly spaced values in [-1, 1]: bitsandbytes' CPU lookup table.

    bitsandbytes 0.50 does not search the 256 code values per element on the CPU: it rounds the
    normed value to one of 65536 grid points and reads that point's code (the nearest code value,
    a point on a midpoint taking the lower one). Near a midpoint the grid point can fall on the
    other side, so this is NOT always the nearest code of the value itself; we build the same
    table, from the same float32 operations, to give the same codes.
    """
    code = dynamic_code()
    midpoints = 0.5 * (code[:-1] + code[1:])  # (255,) float32
    grid = -1.0 + (2.0 * torch.arange(_LUT_SIZE, dtype=torch.float32)) / (_LUT_SIZE - 1)  # (65536,)
    return torch.searchsorted(midpoints, grid).to(torch.uint8)  # how many midpoints lie below


_LUT_SIZE = 65536


def quantize_blockwise(x: Tensor, blocksize: int = NESTED_BLOCKSIZE) -> tuple[Tensor, Tensor]:
    """8-bit block-wise quantization with :func:`dynamic_code`: (codes uint8, absmax float32).

    Like bitsandbytes on the CPU: normed = ``x * (1 / absmax)`` clamped to [-1, 1], the grid
    index ``int((normed + 1) * 0.5 * 65535 + 0.5)`` and its code (:func:`_lut_for_8bit`); a block
    whose absmax is 0 gets code 0 throughout.
    """
    flat = x.reshape(-1).float()
    full, rest = _blocks(flat, blocksize)
    maxima = [full.abs().amax(dim=-1)] if full.numel() else []
    absmax = torch.cat([*maxima, *([rest.abs().amax().reshape(1)] if rest is not None else [])])
    inverse = (1.0 / absmax).repeat_interleave(blocksize)[: flat.numel()]
    normed = torch.clamp(flat * inverse, -1.0, 1.0)
    grid = ((normed + 1.0) * 0.5 * (_LUT_SIZE - 1) + 0.5).to(torch.int64)  # truncation, as a C cast
    codes = _lut_for_8bit()[grid.clamp(0, _LUT_SIZE - 1)]
    codes = torch.where((absmax == 0).repeat_interleave(blocksize)[: flat.numel()], 0, codes)
    return codes.to(torch.uint8).reshape(x.shape), absmax


def dequantize_blockwise(codes: Tensor, absmax: Tensor, blocksize: int = NESTED_BLOCKSIZE) -> Tensor:
    """float32 values of :func:`quantize_blockwise`'s codes."""
    per_value = absmax.repeat_interleave(blocksize)[: codes.numel()]
    return (dynamic_code().to(codes.device)[codes.reshape(-1).long()] * per_value).reshape(codes.shape)


def quantize_4bit(x: Tensor, quant_type: QuantType = "nf4", blocksize: int = BLOCKSIZE) -> Packed4bit:
    """Quantize ``x`` to packed 4-bit codes with double-quantized absmax (equals bitsandbytes)."""
    _check_float(x, "quantize_4bit")
    if blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        raise ValueError(f"blocksize {blocksize}: choose a power of two from 32 to 4096 (QLoRA uses 64)")
    scaled, absmax = _scaled_for_4bit(x.reshape(-1).float(), blocksize)
    if scaled.numel() % 2:
        scaled = torch.cat([scaled, scaled.new_zeros(1)])
    codes = _nearest_4bit(scaled, code_table(quant_type))
    packed = (codes[0::2] << 4) | codes[1::2]  # (ceil(numel / 2),): element 2k high, 2k+1 low
    offset = absmax.mean()
    absmax_q, absmax_scale = quantize_blockwise(absmax - offset)
    return Packed4bit(packed, absmax_q, absmax_scale, offset, tuple(x.shape), x.dtype, quant_type, blocksize)


def unpack_codes(packed: Tensor, numel: int) -> Tensor:
    """The 4-bit codes (int64, one per element) of a packed byte tensor."""
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=-1).reshape(-1)  # (2 * bytes,)
    return codes[:numel].long()


def dequantize_4bit(q: Packed4bit, dtype: torch.dtype | None = None) -> Tensor:
    """The float tensor (``q.dtype`` unless ``dtype``); each value rounded once from float32."""
    numel = 1
    for size in q.shape:
        numel *= size
    values = code_table(q.quant_type).to(q.packed.device)[unpack_codes(q.packed, numel)]  # (numel,) float32
    scales = q.absmax().float().repeat_interleave(q.blocksize)[:numel]
    return (values * scales).reshape(q.shape).to(dtype or q.dtype)
