"""Shared by the kernel tests: a rigorous float32 error bound, and the instruction-set paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.kernels import build

UNIT_ROUNDOFF = 2.0**-24  # float32
EXPLICIT_ISAS = [name for name in build.ISAS if name != "native"]


def gamma(k: int) -> float:
    """Higham's ``gamma_k = k u / (1 - k u)``: the relative error of k float32 roundings in a row."""
    return k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)


def reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.T + b`` in float64: the ground truth every float32 path is judged against."""
    return F.linear(x.double(), w.double(), None if b is None else b.double())


def float32_linear_bound(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Elementwise float64 bound on ``|float32 result - reference(x, w, b)|`` for ANY float32
    evaluation of ``x @ w.T + b``: ``gamma_(n+2) * (|x| |w|.T + |b|)``, n = in_features.

    A dot product of n terms summed in any order or blocking, with or without fused multiply-adds,
    is within ``gamma_n |x||w|`` of exact (Higham, Accuracy and Stability, eq. 3.5); adding the
    bias is one rounding more (``gamma_(n+1)``). The last ``u`` of headroom covers the float64
    reference's own error (< (n + 1) 2^-53 relative, far below 2^-24). So it holds on every CPU,
    whatever MKL or the kernel does there, yet it stays near n u of the outputs' size, which a
    dropped tile, a skipped input or a wrong row exceeds by orders of magnitude.
    """
    size = F.linear(x.double().abs(), w.double().abs(), None if b is None else b.double().abs())
    return gamma(x.shape[-1] + 2) * size


def assert_within_float32_bound(
    got: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
) -> None:
    """``got`` (a float32 kernel result) is as close to float64 truth as float32 arithmetic allows."""
    want = reference(x, w, b)
    assert got.dtype == torch.float32 and got.shape == want.shape
    gap = (got.double() - want).abs()
    bound = float32_linear_bound(x, w, b)
    worst = int((gap - bound).flatten().argmax())
    assert (gap <= bound).all(), (
        f"error {gap.flatten()[worst]:.3g} exceeds the float32 bound {bound.flatten()[worst]:.3g} "
        f"at flat index {worst}"
    )


def runnable(isa: str) -> None:
    """Skip, naming the CPU flags missing, unless this CPU can execute path ``isa``."""
    missing = build.missing_cpu_flags(isa)
    if missing is None:
        pytest.skip(f"cannot read this CPU's flags to know whether it runs {isa} code")
    if missing:
        flags = ", ".join(missing)
        pytest.skip(f"this CPU lacks {flags} (see /proc/cpuinfo), so it cannot run the {isa} kernels")


@pytest.fixture(params=list(build.ISAS))
def kernel_isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each instruction-set path in turn, as the library every kernel caller gets from ``load()``;
    paths this CPU cannot execute are skipped with the missing flag."""
    runnable(request.param)
    lib = build.load(request.param)
    if lib is None:
        pytest.skip(f"C kernels unavailable for {request.param}: {build.unavailable_reason(request.param)}")
    build.load()  # the configured library's slot exists, so the next line replaces it
    monkeypatch.setitem(build._state, "lib", lib)
    return request.param
