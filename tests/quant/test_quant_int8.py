"""int8 against bitsandbytes 0.50: the codes bit for bit, the LLM.int8() product to float32 rounding.

What is compared: ``quantize_rows`` vs ``int8_vectorwise_quant`` (int8 codes equal; our scale is
its ``row_stats / 127`` to one float32 rounding), the activations' outlier columns and inlier
codes with ``threshold=6.0``, and ``int8_matmul`` vs ``int8_mixed_scaled_mm``: bitsandbytes scales
the int32 product by ``row * col * 6.200124e-05``, a constant 1.8e-5 (relative) above
``1 / 127**2 = 6.2000124e-05``, where we use ``(row / 127) * (col / 127)``; so the two agree to
about 2e-5 relative, not to float32 rounding, and the test allows 3e-5 (plus 1e-4 absolute for
outputs near zero). bitsandbytes' ``int8_linear_matmul`` (int32 product) is compared exactly.
"""

from __future__ import annotations

import pytest
import torch

from glassformer.quant import int8

bnb = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is the reference (pip install -e .[dev])")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weight_codes_equal_bitsandbytes(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    w = torch.randn(48, 80).to(dtype)
    codes, row_stats, _ = bnb.int8_vectorwise_quant(w.clone())
    ours = int8.quantize_rows(w)
    assert torch.equal(ours.q, codes)
    torch.testing.assert_close(ours.scale, row_stats / 127, rtol=1.2e-7, atol=0)
    reference = bnb.int8_vectorwise_dequant(codes, row_stats)
    torch.testing.assert_close(ours.dequantize(), reference, rtol=3e-7, atol=1e-9)


def test_per_channel_error_at_most_half_a_step() -> None:
    torch.manual_seed(1)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64).unsqueeze(1)  # rows of very different sizes
    rows = int8.quantize_rows(w)
    error = (rows.dequantize() - w).abs().amax(dim=1)
    assert (error <= rows.scale / 2 * (1 + 1e-5)).all()
    assert (rows.q.abs().amax(dim=1) == 127).all()  # the absmax maps to +-127


def _activations() -> torch.Tensor:
    torch.manual_seed(2)
    x = torch.randn(5, 80)
    x[1, 3], x[3, 70], x[0, 40] = 9.0, -7.0, 6.0  # 6.0 itself counts (|x| >= threshold)
    return x


def test_outlier_columns_and_inlier_codes_equal_bitsandbytes() -> None:
    x = _activations()
    codes, stats, cols = bnb.int8_vectorwise_quant(x.clone(), threshold=6.0)
    ours = int8.outlier_columns(x, 6.0)
    assert ours.tolist() == cols.tolist() == [3, 40, 70]
    inliers = x.clone()
    inliers[:, ours] = 0
    rows = int8.quantize_rows(inliers)
    assert torch.equal(rows.q, codes)


def test_outlier_matmul_matches_bitsandbytes_and_float() -> None:
    x = _activations()
    torch.manual_seed(3)
    w = torch.randn(48, 80) * 0.1
    ca, sca, cols = bnb.int8_vectorwise_quant(x.clone(), threshold=6.0)
    cb, scb, _ = bnb.int8_vectorwise_quant(w.clone())
    assert torch.equal(bnb.int8_linear_matmul(ca, cb), (ca.double() @ cb.double().T).to(torch.int32))
    reference, _ = torch.ops.bitsandbytes.int8_mixed_scaled_mm.default(x, ca, cb, sca, scb, cols, None)
    ours = int8.int8_matmul(x, int8.quantize_rows(w), threshold=6.0)
    torch.testing.assert_close(ours, reference, rtol=3e-5, atol=1e-4)
    # the decomposition is what keeps the outliers' error small: without it, it grows
    exact = x @ w.T
    plain = int8.int8_matmul(x, int8.quantize_rows(w), threshold=None)
    assert (ours - exact).abs().max() < (plain - exact).abs().max()


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match=r"2-D"):
        int8.quantize_rows(torch.ones(4))
    with pytest.raises(TypeError, match="int32"):
        int8.quantize_rows(torch.ones(2, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        int8.int8_matmul(torch.ones(2, 4), int8.quantize_rows(torch.ones(5, 3)))
