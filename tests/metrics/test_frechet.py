"""The Frechet distance against the scipy ``sqrtm`` formula the FID reference implementations use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.metrics import frechet_distance

scipy_linalg = pytest.importorskip("scipy.linalg")


def _reference(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy_linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_equals_the_scipy_formula(shift: float) -> None:
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(8, 8, generator=gen)
    a = torch.randn(300, 8, generator=gen) @ mix  # correlated features
    b = torch.randn(200, 8, generator=gen) @ (mix + 0.3 * torch.randn(8, 8, generator=gen)) + shift
    expected = _reference(a.double().numpy(), b.double().numpy())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_a_set_is_at_distance_zero_from_itself_and_shapes_are_checked() -> None:
    a = torch.randn(100, 5, generator=torch.Generator().manual_seed(1))
    assert abs(frechet_distance(a, a)) < 1e-8
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, torch.randn(10, 4))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(a[:1], a[:1])
