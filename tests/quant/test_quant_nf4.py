"""NF4/FP4 with double quantization against bitsandbytes 0.50 (CPU backend): bit for bit.

Compared on each case: the packed bytes, the 8-bit absmax codes, the nested (per-256) scales,
the mean offset, and the dequantized tensor. No difference is tolerated; the module docstring of
``glassformer.quant.nf4`` says which bitsandbytes details (multiply by the reciprocal, midpoint
ties to the lower code, the 65536-point lookup table of the 8-bit scale codes) make that possible.
"""

from __future__ import annotations

import copy

import pytest
import torch

from glassformer.quant import nf4

bnb = pytest.importorskip(
    "bitsandbytes.functional", reason="bitsandbytes is the reference (pip install -e .[dev])"
)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# a partial last block in (3, 3, 96) and the odd shapes; odd last dimensions send bitsandbytes'
# dequantize to a torch.compile'd fallback, run eagerly here (compiling costs seconds)
SHAPES = [(64, 128), (300, 64), (3, 3, 96), (17, 33), (7,)]
CASES = [(shape, dtype, qt) for shape in SHAPES for dtype in DTYPES for qt in ("nf4", "fp4")]


def _reference(w: torch.Tensor, quant_type: str) -> tuple[torch.Tensor, object]:
    return bnb.quantize_4bit(w, quant_type=quant_type, blocksize=64, compress_statistics=True)


@pytest.mark.parametrize(("shape", "dtype", "quant_type"), CASES)
def test_quantize_and_dequantize_equal_bitsandbytes(
    shape: tuple[int, ...], dtype: torch.dtype, quant_type: str
) -> None:
    torch.manual_seed(CASES.index((shape, dtype, quant_type)))
    w = (torch.randn(shape) * 0.05).to(dtype)
    packed, state = _reference(w, quant_type)
    ours = nf4.quantize_4bit(w, quant_type)  # type: ignore[arg-type]
    assert torch.equal(ours.packed, packed.reshape(-1))
    assert torch.equal(ours.absmax_q, state.absmax)
    assert torch.equal(ours.absmax_scale, state.state2.absmax)
    assert torch.equal(ours.absmax_offset, state.offset)
    with torch.compiler.set_stance("force_eager"):
        reference = bnb.dequantize_4bit(packed, _flat(state, w)).reshape(shape)
    assert torch.equal(nf4.dequantize_4bit(ours), reference)


def _flat(state: object, w: torch.Tensor) -> object:
    """The quantization state of ``w`` seen as one flat tensor, which is how bitsandbytes blocks it
    when quantizing. Its native CPU dequantize kernel (taken on AVX-512 machines) instead blocks a
    tensor of several rows row by row when the last dimension is not a multiple of the block (64):
    on (3, 3, 96) it reads the elements 128-159 with block 1's absmax instead of block 2's, and is
    then no longer the inverse of its own quantization (see the test below)."""
    flat = copy.copy(state)
    flat.shape = torch.Size([w.numel()])
    return flat


def test_bitsandbytes_shaped_dequantize_is_equal_or_further_from_the_weights() -> None:
    """Every difference from bitsandbytes' dequantize of the shaped tensor is that kernel's: where
    the two differ, ours is the closer to the original weights."""
    torch.manual_seed(0)
    w = torch.randn(3, 3, 96) * 0.05
    packed, state = _reference(w, "nf4")
    with torch.compiler.set_stance("force_eager"):
        shaped = bnb.dequantize_4bit(packed, state)
    ours = nf4.dequantize_4bit(nf4.quantize_4bit(w, "nf4"))
    if not torch.equal(ours, shaped):
        assert (ours - w).abs().mean() < (shaped - w).abs().mean()


def test_tables_equal_bitsandbytes() -> None:
    assert torch.equal(nf4.NF4_CODE, bnb.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(nf4.FP4_CODE, bnb.get_4bit_type("fp4", device="cpu"))
    assert torch.equal(nf4.dynamic_code(), bnb.create_dynamic_map())


def test_blockwise_8bit_equals_bitsandbytes_near_midpoints() -> None:
    """Values spread densely over [-1, 1], so many fall next to a midpoint of the dynamic code."""
    x = torch.linspace(-1, 1, 256 * 40) + torch.randn(256 * 40) * 1e-4
    codes, absmax = bnb.quantize_blockwise(x, blocksize=256)
    ours, our_absmax = nf4.quantize_blockwise(x)
    assert torch.equal(ours, codes) and torch.equal(our_absmax, absmax.absmax)


def test_layout_high_nibble_first() -> None:
    """Element 2k is the high nibble of byte k: the layout the C kernels read."""
    w = torch.tensor([[-1.0, 1.0] + [0.0] * 62])  # one block: codes 0 (-1.0), 15 (1.0), 7 (0.0)
    q = nf4.quantize_4bit(w)
    assert q.packed[0].item() == 0x0F and q.packed[1].item() == 0x77


def test_round_trip_error_is_small() -> None:
    torch.manual_seed(0)
    w = torch.randn(256, 256)
    back = nf4.dequantize_4bit(nf4.quantize_4bit(w))
    assert ((back - w).norm() / w.norm()).item() < 0.12  # NF4 on normal weights: about 0.09-0.10
    blocks = w.reshape(-1, 64).abs().amax(1, keepdim=True)
    assert ((back - w).reshape(-1, 64).abs() <= 0.19 * blocks + 1e-6).all()  # half the widest NF4 gap


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match="int64.*float32"):
        nf4.quantize_4bit(torch.ones(64, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        nf4.quantize_4bit(torch.ones(0))
    with pytest.raises(ValueError, match="quant_type"):
        nf4.quantize_4bit(torch.ones(64), "nf3")  # type: ignore[arg-type]
