"""The C kernels of quantized decoding (``glassformer/kernels/quant.c``), called on the layers' own buffers.

A decoding step multiplies each weight by 1 to 8 rows (batch 1 to 8), so its speed is how fast the
weights stream from memory: int8 reads a quarter of float32's bytes and 4-bit an eighth, but only
if nothing dequantizes the whole matrix first. The kernels read ``qweight`` (int8) and ``packed``
(4-bit) in place, in the layouts documented in :mod:`glassformer.quant.int8` and
:mod:`glassformer.quant.nf4`; no second copy of a weight is made.

Numbers (``quant.c`` has the detail): the int8 kernel quantizes each row of x to 16 bits, so it
differs from ``x @ dequantized_weight.T`` by at most ``sum_i |W[o, i]| * (xs / 2 + 3u |x_i|)`` with
``xs = max|x| / 32767`` (about 1e-5 of the outputs' size), and every instruction-set path gives the
same bits. The 4-bit kernel looks up exactly the dequantized weight and sums in float32 (within
float32's own error bound of the float64 truth), the same bits on every path too.

:func:`kernel_status` says whether quantized layers can use the kernels here, and why not; when
they cannot (no compiler, a path the CPU cannot run) or can only use the plain-C fallback (a CPU
without AVX2), the first layer to notice warns once.
"""

from __future__ import annotations

import ctypes
import platform
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from glassformer.kernels.build import configured_isa, load, unavailable_reason
from glassformer.kernels.build import isa as library_isa

MAX_ROWS = 8  # rows of x per call; beyond it the work is a matrix product, PyTorch's domain
BLOCK = 64  # the 4-bit kernel's block: scales per 64 weights, never crossing a row
_warned: set[str] = set()  # the fallback warnings already given in this process
_status: dict[str, object] = {}  # kernel_status of the library last seen: "lib", "why"


def kernel_status() -> tuple[ctypes.CDLL | None, str | None]:
    """``(library, None)`` when the quantized kernels run on a SIMD path, ``(library, why slow)``
    on the plain-C path of a CPU without AVX2 (chosen by the machine, not by the user), and
    ``(None, why not)`` when there is no library (then the layers dequantize with PyTorch)."""
    lib = load()
    if lib is None:
        return None, unavailable_reason()
    if _status.get("lib") is not lib:  # once per library: a forward pass asks every time
        x86 = platform.machine().lower() in ("x86_64", "amd64")
        slow = x86 and library_isa(lib) == "generic" and configured_isa() == "native"
        _status["lib"] = lib
        _status["why"] = "this CPU lacks AVX2 (see /proc/cpuinfo), so the int8/4-bit kernels run their plain C code" if slow else None
    return lib, _status["why"]  # type: ignore[return-value]


def warn_fallback_once(reason: str, stacklevel: int = 3) -> None:
    """One warning per reason and process: a checkpoint decodes, but not as fast as it could."""
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(f"glassformer.quant: {reason}; quantized layers still give the same results, only slower. "
                  "Set GLASSFORMER_KERNELS=0 to decode with PyTorch and silence this.", stacklevel=stacklevel)  # fmt: skip


def _rows(x: Tensor, in_features: int) -> Tensor:
    """``x`` as a float32 ``(N, in_features)`` CPU matrix with unit stride along a row."""
    if x.dim() == 0 or x.shape[-1] != in_features:
        raise ValueError(f"input has shape {tuple(x.shape)}; the weight expects {in_features} features in the last dimension")
    if not x.is_cpu:
        raise TypeError(f"the quantized kernels take CPU input, got a tensor on {x.device}")
    rows = x.reshape(-1, in_features)
    if rows.dtype != torch.float32:
        rows = rows.float()
    if not 0 < rows.shape[0] <= MAX_ROWS:
        raise ValueError(f"the quantized kernels take 1 to {MAX_ROWS} rows, got {rows.shape[0]}; use the layer's "
                         "PyTorch path for more")  # fmt: skip
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def _check(code: int, name: str, keep: tuple) -> None:
    """Turn the kernel's status into an error (``keep``: the buffers, alive until here)."""
    del keep
    if code == -2:
        raise MemoryError(f"{name}: no memory left for the kernel's copy of the input")
    if code != 0:
        raise ValueError(f"{name}: the kernel refused its arguments (code {code})")


def _library() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise RuntimeError(f"the glassformer C kernels are not available ({unavailable_reason()}); "
                           "use the layer's PyTorch path")  # fmt: skip
    return lib


Plan = Callable[[Tensor], Tensor]


def int8_plan(qweight: Tensor, scale: Tensor, rowsum: Tensor, bias: Tensor | None) -> Plan:
    """``x -> x @ (qweight * scale[:, None]).T + bias`` in C, the buffers checked once, here.

    ``qweight``: ``(out, in)`` int8, ``scale``: ``(out,)`` float32, ``rowsum``: ``(out,)`` int32,
    each row's sum of codes (:func:`int8_rowsum`), all contiguous on the CPU. The plan takes x of
    shape ``(..., in)`` with 1 to 8 rows and keeps the buffers alive.
    """
    out_features, in_features = qweight.shape
    _check_buffers(qweight=(qweight, torch.int8), scale=(scale, torch.float32), rowsum=(rowsum, torch.int32))
    _check_bias(bias, out_features)
    lib = _library()
    pointers = (qweight.data_ptr(), scale.data_ptr(), rowsum.data_ptr(), None if bias is None else bias.data_ptr())
    keep = (qweight, scale, rowsum, bias)

    def run(x: Tensor) -> Tensor:
        rows = _rows(x, in_features)
        y = torch.empty(rows.shape[0], out_features, dtype=torch.float32)
        code = lib.gf_q8_linear(rows.data_ptr(), rows.stride(0), *pointers, y.data_ptr(), rows.shape[0],
                                in_features, out_features)  # fmt: skip
        if code:
            _check(code, "int8_linear", keep)
        return y.view(*x.shape[:-1], out_features)

    return run


def int8_linear(x: Tensor, qweight: Tensor, scale: Tensor, rowsum: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ (qweight * scale[:, None]).T + bias`` in C for at most 8 rows (see :func:`int8_plan`)."""
    return int8_plan(qweight, scale, rowsum, bias)(x)


def int4_plan(packed: Tensor, block_scale: Tensor, code: Tensor, bias: Tensor | None, out_features: int,
              in_features: int) -> Plan:  # fmt: skip
    """``x -> x @ W.T + bias`` in C for a 4-bit ``(out_features, in_features)`` weight (NF4 or FP4).

    ``packed``: the ``(out * in / 2,)`` uint8 codes; ``block_scale``: ``(out * in / 64,)`` float32,
    the dequantized absmax of each block (``Packed4bit.absmax()``); ``code``: the 16 code values;
    ``in_features`` must be a multiple of 64.
    """
    if in_features % BLOCK or packed.numel() * 2 != out_features * in_features:
        raise ValueError(f"int4_linear: {packed.numel()} packed bytes do not hold a ({out_features}, {in_features}) "
                         f"weight with in_features a multiple of {BLOCK}")  # fmt: skip
    _check_buffers(packed=(packed, torch.uint8), block_scale=(block_scale, torch.float32), code=(code, torch.float32))
    if block_scale.numel() != packed.numel() * 2 // BLOCK or code.numel() != 16:
        raise ValueError(f"int4_linear: {block_scale.numel()} block scales and {code.numel()} code values; expected "
                         f"{packed.numel() * 2 // BLOCK} and 16")  # fmt: skip
    _check_bias(bias, out_features)
    lib = _library()
    pointers = (packed.data_ptr(), block_scale.data_ptr(), code.data_ptr(), None if bias is None else bias.data_ptr())
    keep = (packed, block_scale, code, bias)

    def run(x: Tensor) -> Tensor:
        rows = _rows(x, in_features)
        y = torch.empty(rows.shape[0], out_features, dtype=torch.float32)
        status = lib.gf_q4_linear(rows.data_ptr(), rows.stride(0), *pointers, y.data_ptr(), rows.shape[0],
                                  in_features, out_features)  # fmt: skip
        if status:
            _check(status, "int4_linear", keep)
        return y.view(*x.shape[:-1], out_features)

    return run


def int4_linear(x: Tensor, packed: Tensor, block_scale: Tensor, code: Tensor, bias: Tensor | None,
                out_features: int) -> Tensor:  # fmt: skip
    """``x @ W.T + bias`` in C for at most 8 rows of a 4-bit weight (see :func:`int4_plan`)."""
    return int4_plan(packed, block_scale, code, bias, out_features, x.shape[-1])(x)


def _check_buffers(**buffers: tuple[Tensor, torch.dtype]) -> None:
    """Each buffer contiguous, on the CPU, of its dtype: the C code reads raw memory."""
    for name, (t, dtype) in buffers.items():
        if t.dtype != dtype or not t.is_cpu or not t.is_contiguous():
            raise TypeError(f"{name}: the kernel reads a contiguous CPU {dtype} tensor, got {t.dtype} on {t.device}"
                            f"{'' if t.is_contiguous() else ' (not contiguous)'}")  # fmt: skip


def _check_bias(bias: Tensor | None, out_features: int) -> None:
    if bias is not None:
        _check_buffers(bias=(bias, torch.float32))
        if bias.numel() != out_features:
            raise ValueError(f"bias has {bias.numel()} values; the weight has {out_features} outputs")


def int8_rowsum(qweight: Tensor) -> Tensor:
    """Each output row's sum of int8 codes, int32: the AVX-512 VNNI path needs it (quant.c)."""
    return qweight.sum(dim=1, dtype=torch.int32).contiguous()
