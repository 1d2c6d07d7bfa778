"""The packed matrix-vector kernel: same numbers as F.linear, never stale, optional."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glassformer.generate.shortlist import ShortlistHead
from glassformer.kernels import (
    FastLinear,
    available,
    build,
    pack_weight,
    packed_linear,
    unavailable_reason,
    use_fast_linear,
    use_torch_linear,
)
from tests.kernels.conftest import assert_within_float32_bound, float32_linear_bound, reference, runnable

needs_kernels = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")
SHAPES = [(96, 64), (50, 17), (7, 5), (300, 129), (33, 768)]  # (out, in): partial tiles, odd tails


@needs_kernels
@pytest.mark.parametrize("out_features,in_features", SHAPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 13, 16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_packed_linear_matches_float64(kernel_isa, out_features, in_features, rows, with_bias):
    """Within float32's own error bound of the float64 truth, on every path this CPU runs."""
    torch.manual_seed(out_features * 1000 + in_features + rows)
    w = torch.randn(out_features, in_features)
    b = torch.randn(out_features) if with_bias else None
    x = torch.randn(rows, in_features)
    got = packed_linear(x, pack_weight(w), b, out_features)
    assert_within_float32_bound(got, x, w, b)
    # the bound is far below the outputs' size, so a wrong or missing output cannot hide under it
    assert float32_linear_bound(x, w, b).max() < 0.01 * reference(x, w, b).square().mean().sqrt()


@needs_kernels
def test_packed_linear_takes_strided_and_batched_input():
    torch.manual_seed(0)
    w, b = torch.randn(40, 24), torch.randn(40)
    x = torch.randn(3, 2, 48)[..., ::2]  # (3, 2, 24), last dim not contiguous
    got = packed_linear(x, pack_weight(w), b, 40)
    assert got.shape == (3, 2, 40)
    assert_within_float32_bound(got, x, w, b)


@needs_kernels
def test_every_path_rounds_the_same_way(kernel_isa, monkeypatch):
    """The summation order is the code's, not the vector width's, and nothing is fused: each path
    gives bit for bit the float32 results of the plain-C (generic) build, int8 scores too."""
    runnable("generic")
    torch.manual_seed(3)
    cases = [(torch.randn(o, i), torch.randn(o), torch.randn(13, i)) for o, i in SHAPES]  # 13 rows: 8, 4, 1
    heads = [ShortlistHead(w, b, int8_dot=False) for w, b, _ in cases]

    def outputs() -> list[torch.Tensor]:
        dense = [packed_linear(x, pack_weight(w), b, w.shape[0]) for w, b, x in cases]
        return dense + [head.scores(x)[0] for head, (_, _, x) in zip(heads, cases, strict=True)]

    got = outputs()
    with monkeypatch.context() as patch:
        patch.setitem(build._state, "lib", build.load("generic"))
        want = outputs()
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w), f"the {kernel_isa} kernels round differently from the generic build"


@needs_kernels
def test_packed_linear_rejects_mismatched_input():
    p = pack_weight(torch.randn(40, 24))
    with pytest.raises(ValueError, match="24"):
        packed_linear(torch.randn(1, 25), p, None, 40)
    with pytest.raises(TypeError, match="float32"):
        packed_linear(torch.randn(1, 24, dtype=torch.float64), p, None, 40)
    with pytest.raises(ValueError, match="does not hold"):
        packed_linear(torch.randn(1, 24), p, None, 90)


@needs_kernels
def test_fast_linear_equals_linear_and_keeps_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 48), nn.GELU(), nn.Linear(48, 24, bias=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 24)
    want = model(x)
    assert use_fast_linear(model) == 2
    assert all(type(m) is FastLinear for m in (model[0], model[2]))
    assert model.state_dict().keys() == before.keys()
    with torch.inference_mode():
        got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert model[0].__dict__.get("_packed") is not None  # the kernel path was taken
    assert use_torch_linear(model) == 2 and type(model[0]) is nn.Linear


@needs_kernels
def test_fast_linear_reports_a_wrong_width_like_linear():
    """A (2, 32) input to a 64-wide layer has 64 elements, one row's worth: it must not be read as one."""
    layer = nn.Linear(64, 8)
    use_fast_linear(layer)
    with torch.no_grad(), pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        layer(torch.randn(2, 32))


@needs_kernels
def test_fast_linear_trains_through_autograd_and_repacks_after_updates():
    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    use_fast_linear(layer)
    x = torch.randn(1, 16)
    with torch.no_grad():
        first = layer(x)
    # with autograd on, the layer is plain F.linear: gradients exist and an optimizer can step
    loss = layer(x).square().sum()
    loss.backward()
    assert layer.weight.grad is not None
    torch.optim.SGD(layer.parameters(), lr=0.5).step()
    with torch.no_grad():
        after = layer(x)
    torch.testing.assert_close(after, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(after, first)  # the packed copy followed the update


@needs_kernels
def test_fast_linear_keeps_tied_weights_tied():
    emb = nn.Embedding(64, 16)
    head = nn.Linear(16, 64, bias=False)
    head.weight = emb.weight
    use_fast_linear(head)
    assert head.weight is emb.weight
    with torch.no_grad():
        emb.weight[3].fill_(1.0)
        out = head(torch.ones(1, 16))
    assert out[0, 3].item() == pytest.approx(16.0)


@needs_kernels
def test_short_memory_keeps_pytorchs_products(monkeypatch):
    """Where the packed copy would eat more than half of the free memory, the layer stays on
    F.linear (same results) and says so once."""
    import glassformer.kernels.linear as linear

    monkeypatch.setattr(linear, "memory_available", lambda: 1000)  # bytes
    monkeypatch.setattr(linear, "_warned_memory", False)
    layer = nn.Linear(64, 32)
    x = torch.randn(1, 64)
    want = F.linear(x, layer.weight, layer.bias)
    with pytest.warns(UserWarning, match="not packing"):
        use_fast_linear(layer)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        got = layer(x)
    torch.testing.assert_close(got, want)
    assert layer.packed_weight() is None


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_turned_off_kernels_fall_back_to_pytorch(tmp_path):
    code = (
        "import torch\n"
        "from glassformer.kernels import available, unavailable_reason\n"
        "from glassformer.models.gpt import GPT\n"
        "from glassformer.models.gpt.config import GPTConfig\n"
        "from glassformer.generate import generate\n"
        "torch.manual_seed(0)\n"
        "m = GPT(GPTConfig(vocab_size=256, max_seq_len=32, n_layers=1, n_heads=2, dim=16)).eval()\n"
        "print(available(), unavailable_reason())\n"
        "print(generate(m, [1, 2, 3], max_new_tokens=5).tokens[0])\n"
    )
    off = _run(code, GLASSFORMER_KERNELS="0", GLASSFORMER_CACHE=str(tmp_path))
    assert off.returncode == 0, off.stderr
    assert "False turned off by GLASSFORMER_KERNELS=0" in off.stdout
    on = _run(code, GLASSFORMER_CACHE=str(tmp_path))
    assert on.returncode == 0, on.stderr
    if available():
        assert on.stdout.splitlines()[0] == "True None"
        assert list((tmp_path / "kernels").glob("linear-*.so"))  # compiled into the cache folder
    assert on.stdout.splitlines()[1] == off.stdout.splitlines()[1]  # same tokens either way


def test_a_broken_compiler_is_reported_not_raised(tmp_path):
    out = _run(
        "from glassformer.kernels import available, unavailable_reason\n"
        "print(available()); print(unavailable_reason())\n",
        CC="false", GLASSFORMER_CACHE=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "False"
    assert "could not build linear.c" in out.stdout
