"""The Frechet distance between two sets of features (the "FID" formula, on any feature extractor).

Each set is summarised by a Gaussian (mean ``mu``, covariance ``S``); the distance between the two
Gaussians is ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``. The matrix square root
is taken as ``S_a^(1/2) S_b S_a^(1/2)``, which is symmetric and has the same trace of square root,
so eigendecompositions in float64 do it without the complex round-off of a general ``sqrtm``.

The estimate is biased upwards by the sample count (a covariance from few samples is noisy), so
distances compare only at equal counts; report the floor (real images against real images, same
count) beside them.
"""

from __future__ import annotations

import torch
from torch import Tensor


def feature_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, D)`` features -> mean ``(D,)`` and unbiased covariance ``(D, D)``, in float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D); got {tuple(features.shape)}")
    x = features.double()
    return x.mean(0), torch.cov(x.T)


def _sqrt_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Frechet distance between feature sets ``a`` ``(N, D)`` and ``b`` ``(M, D)``."""
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, D) and (M, D) with the same D; got {tuple(a.shape)} and {tuple(b.shape)}")
    mu_a, cov_a = feature_stats(a)
    mu_b, cov_b = feature_stats(b)
    root_a = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()  # tr((S_a S_b)^(1/2))
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)
