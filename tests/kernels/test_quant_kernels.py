"""The int8 and 4-bit matrix-vector kernels (quant.c) against float64 products of the dequantized weight."""

from __future__ import annotations

import pytest
import torch

from glassformer.kernels import available, build, unavailable_reason
from glassformer.quant.int8 import quantize_rows
from glassformer.quant.kernel import int4_linear, int8_linear, int8_rowsum
from glassformer.quant.nf4 import code_table, dequantize_4bit, quantize_4bit
from tests.kernels.conftest import UNIT_ROUNDOFF, assert_within_float32_bound, gamma, reference, runnable

needs_kernels = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")
# (out, in): partial vectors and odd tails (17, 100), more than one int32 chunk of 2048 inputs (4100,
# 4096); at batch 1 the kernels take weight rows four at a time where in % 64 == 0 (768, 4096), and
# the rows past the last full group (50 = 12 * 4 + 2, 9, 7) one at a time
INT8_SHAPES = [(50, 17), (7, 100), (40, 768), (9, 4100), (9, 4096)]
INT4_SHAPES = [(5, 128), (40, 576), (3, 2112), (10, 2112)]  # in_features: multiples of the 64-block
ROWS = [1, 3, 8]


def int8_case(out_features: int, in_features: int, rows: int, seed: int):
    torch.manual_seed(seed)
    q = quantize_rows(torch.randn(out_features, in_features))
    x, b = torch.randn(rows, in_features), torch.randn(out_features)
    return q, x, b


def int8_bound(x: torch.Tensor, wdeq: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How far the int8 kernel may be from float64 ``x @ wdeq.T + b`` (derivation in quant.c).

    x is quantized per row: |x - xq * xs| <= xs / 2 + 3u|x| with xs = max|x| / 32767; the integer
    sum is exact; converting it, two products and the bias add are 4 roundings more.
    """
    xs = x.double().abs().amax(dim=1, keepdim=True) / 32767  # (rows, 1)
    per_input = 0.5 * xs * (1 + 4 * UNIT_ROUNDOFF) + 3.01 * UNIT_ROUNDOFF * x.double().abs()  # (rows, in)
    size = torch.nn.functional.linear(x.double().abs() + per_input, wdeq.double().abs())
    return per_input @ wdeq.double().abs().T + gamma(4) * (size + b.double().abs())


@needs_kernels
@pytest.mark.parametrize("out_features,in_features", INT8_SHAPES)
@pytest.mark.parametrize("rows", ROWS)
def test_int8_kernel_is_within_its_bound(kernel_isa, out_features, in_features, rows):
    q, x, b = int8_case(out_features, in_features, rows, seed=out_features + in_features + rows)
    got = int8_linear(x, q.q, q.scale, int8_rowsum(q.q), b)
    want = reference(x, q.dequantize(), b)
    gap, bound = (got.double() - want).abs(), int8_bound(x, q.dequantize(), b)
    assert (gap <= bound).all(), f"error {float((gap - bound).max()):.3g} above the bound on {kernel_isa}"
    # the worst case grows like sqrt(in_features) relative to the outputs; the errors met are ~3e-5
    size = want.square().mean().sqrt()
    assert bound.max() < 5e-3 * size and gap.square().mean().sqrt() < 1e-4 * size


@needs_kernels
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("out_features,in_features", INT4_SHAPES)
@pytest.mark.parametrize("rows", ROWS)
def test_int4_kernel_is_float32_exact_on_the_dequantized_weight(kernel_isa, quant_type, out_features, in_features, rows):
    """The kernel looks up exactly dequantize_4bit's values, so only float32 summation remains."""
    torch.manual_seed(out_features * 7 + in_features + rows)
    packed = quantize_4bit(torch.randn(out_features, in_features), quant_type)
    x, b = torch.randn(rows, in_features), torch.randn(out_features)
    scales = packed.absmax().float().contiguous()
    got = int4_linear(x, packed.packed, scales, code_table(quant_type), b, out_features)
    assert_within_float32_bound(got, x, dequantize_4bit(packed), b)


@needs_kernels
def test_every_path_gives_the_plain_c_bits(kernel_isa, monkeypatch):
    """Exact integer sums (int8) and a fixed float32 order without fused multiply-adds (4-bit):
    AVX2, AVX-512 and VNNI give bit for bit what the plain C build gives."""
    runnable("generic")
    cases = [int8_case(70, i, 8, seed=1) for i in (4100, 4096)]  # a tail; rows in groups of four
    packed = quantize_4bit(torch.randn(70, 640))
    x4 = torch.randn(7, 640)
    scales = packed.absmax().float().contiguous()

    def outputs() -> list[torch.Tensor]:
        return [int8_linear(x[:m], q.q, q.scale, int8_rowsum(q.q), b) for q, x, b in cases for m in (1, 3, 8)] + [
            int4_linear(x4[:m], packed.packed, scales, code_table("nf4"), None, 70) for m in (1, 2, 7)
        ]

    got = outputs()
    with monkeypatch.context() as patch:
        patch.setitem(build._state, "lib", build.load("generic"))
        want = outputs()
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w), f"the {kernel_isa} quantized kernels round differently from the generic build"


@needs_kernels
@pytest.mark.parametrize("code", [127, -128])
@pytest.mark.parametrize("in_features,rows", [(8200, 2), (8192, 1)])  # (8192, 1): rows four at a time
def test_int8_sums_do_not_overflow(kernel_isa, code, in_features, rows):
    """All weights at the int8 limit and x at its absmax: 8200 * 127 * 32767 is 16x past int32, and
    twice what one AVX2 lane (1 in 8 of the products) holds."""
    qweight = torch.full((4, in_features), code, dtype=torch.int8)
    scale = torch.tensor([1.0, 0.5, 2.0, 0.25])
    x = torch.ones(rows, in_features)
    got = int8_linear(x, qweight, scale, int8_rowsum(qweight), None)
    exact = torch.tensor(float(code * 32767 * in_features), dtype=torch.float32)  # (float)S, as the epilogue
    want = exact * ((torch.tensor(1.0) / 32767) * scale)
    assert torch.equal(got, want.expand(rows, 4))


@needs_kernels
def test_a_row_with_inf_or_nan_gives_nan_and_spares_the_others(kernel_isa):
    q, x, b = int8_case(20, 64, 3, seed=2)
    x[1, 5] = float("inf")
    got = int8_linear(x, q.q, q.scale, int8_rowsum(q.q), b)
    assert got[1].isnan().all() and got[[0, 2]].isfinite().all()


@needs_kernels
def test_zero_input_gives_the_bias(kernel_isa):
    q, _, b = int8_case(20, 64, 1, seed=3)
    assert torch.equal(int8_linear(torch.zeros(2, 64), q.q, q.scale, int8_rowsum(q.q), b), b.expand(2, 20))


@needs_kernels
def test_bad_arguments_are_named():
    q, x, b = int8_case(20, 64, 1, seed=4)
    rowsum = int8_rowsum(q.q)
    with pytest.raises(ValueError, match="1 to 8 rows, got 9"):
        int8_linear(torch.randn(9, 64), q.q, q.scale, rowsum, b)
    with pytest.raises(ValueError, match=r"input has shape \(1, 63\); the weight expects 64 features"):
        int8_linear(torch.randn(1, 63), q.q, q.scale, rowsum, b)
    with pytest.raises(TypeError, match="scale: the kernel reads a contiguous CPU torch.float32"):
        int8_linear(x, q.q, q.scale.double(), rowsum, b)
    with pytest.raises(ValueError, match="bias has 19 values"):
        int8_linear(x, q.q, q.scale, rowsum, b[:19])
    packed = quantize_4bit(torch.randn(4, 96))
    with pytest.raises(ValueError, match="in_features a multiple of 64"):
        int4_linear(torch.randn(1, 96), packed.packed, packed.absmax(), code_table("nf4"), None, 4)
