"""Norms against torch's own layers, feed-forward kinds against their formulas written by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from glassformer.nn.ffn import FeedForward
from glassformer.nn.norms import LayerNorm, RMSNorm, make_norm


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [1e-5, 1e-12])
def test_layernorm_matches_torch(bias: bool, eps: float) -> None:
    ours, ref = LayerNorm(48, eps=eps, bias=bias), torch.nn.LayerNorm(48, eps=eps, bias=bias)
    _randomize(ours)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 48) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_rmsnorm_matches_torch(eps: float) -> None:
    ours, ref = RMSNorm(48, eps=eps), torch.nn.RMSNorm(48, eps=eps)
    _randomize(ours)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 5, 48) * 4 + 2
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


def test_rmsnorm_half_precision_computes_in_float32() -> None:
    """Large bfloat16 activations: the statistic is taken in float32, as torch does in float32."""
    ours = RMSNorm(64)
    x = (torch.randn(2, 64) * 300).to(torch.bfloat16)
    out = ours.to(torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16
    ref = torch.nn.functional.rms_norm(x.float(), (64,), eps=1e-6).to(torch.bfloat16)
    torch.testing.assert_close(out, ref)


def test_make_norm_kinds_and_error() -> None:
    assert isinstance(make_norm("layernorm", 8, 1e-5), LayerNorm)
    assert isinstance(make_norm("rmsnorm", 8, 1e-6), RMSNorm)
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'"):
        make_norm("batchnorm", 8, 1e-5)  # type: ignore[arg-type]


def _gelu_erf(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x: Tensor) -> Tensor:
    return x / (1 + torch.exp(-x))


def _linear(layer: torch.nn.Linear, x: Tensor) -> Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0)


PLAIN = {"relu": lambda x: x.clamp(min=0), "gelu": _gelu_erf, "gelu_tanh": _gelu_tanh, "silu": _silu}
GATED = {"swiglu": _silu, "geglu": _gelu_erf}


@pytest.mark.parametrize("kind", [*PLAIN, *GATED])
@pytest.mark.parametrize("bias", [True, False])
def test_ffn_matches_hand_formula(kind: str, bias: bool) -> None:
    torch.manual_seed(0)
    ffn = FeedForward(16, 40, kind, bias=bias)  # type: ignore[arg-type]
    _randomize(ffn, seed=1)
    x = torch.randn(2, 3, 16)
    if kind in GATED:
        # Shazeer (2020): FFN_GLU(x) = (act(x W) * x V) W2, with act on the gate branch only
        assert ffn.gate is not None
        h = GATED[kind](_linear(ffn.gate, x)) * _linear(ffn.up, x)
    else:
        assert ffn.gate is None
        h = PLAIN[kind](_linear(ffn.up, x))
    expected = _linear(ffn.down, h)
    torch.testing.assert_close(ffn(x), expected, atol=1e-4, rtol=0)
    n_matrices = 3 if kind in GATED else 2
    assert sum(p.dim() == 2 for p in ffn.parameters()) == n_matrices


def test_gelu_kinds_differ() -> None:
    """The exact and tanh GELUs are different functions: a mix-up would be caught above."""
    x = torch.linspace(-4, 4, 101)
    assert (_gelu_erf(x) - _gelu_tanh(x)).abs().max() > 1e-4


def test_unknown_activation() -> None:
    with pytest.raises(ValueError, match="unknown activation 'mish'"):
        FeedForward(8, 16, "mish")  # type: ignore[arg-type]
