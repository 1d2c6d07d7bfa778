"""The NumPy block against glassformer.nn.blocks.TransformerBlock and torch autograd, in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.nn.blocks import TransformerBlock
from glassformer.numpy_ref import NumpyTransformerBlock, param_shapes

DIM, HEADS, HIDDEN = 16, 4, 40
CASES = [
    (position, causal, activation)
    for position in ("pre", "post")
    for causal in (False, True)
    for activation in ("gelu", "gelu_tanh")
]


def make_pair(position: str, causal: bool, activation: str, seed: int = 0):
    """A float64 torch block with random weights everywhere (norm affines too) and its NumPy copy."""
    torch.manual_seed(seed)
    block = TransformerBlock(
        DIM, HEADS, ffn_dim=HIDDEN, activation=activation, norm_position=position, backend="eager"
    ).double()
    with torch.no_grad():
        for name, p in block.named_parameters():
            base = 1.0 if name.endswith("norm.weight") else 0.0
            p.copy_(base + 0.3 * torch.randn_like(p))
    params = {k: v.detach().numpy().copy() for k, v in block.state_dict().items()}
    ref = NumpyTransformerBlock(params, HEADS, norm_position=position, causal=causal, activation=activation)
    return block, ref


def torch_forward_backward(block, x: np.ndarray, dy: np.ndarray, causal: bool):
    xt = torch.tensor(x, requires_grad=True)
    out = block(xt, is_causal=causal).hidden
    (out * torch.tensor(dy)).sum().backward()
    grads = {name: p.grad.numpy() for name, p in block.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


@pytest.mark.parametrize(("position", "causal", "activation"), CASES)
def test_forward_and_backward_match_torch(position, causal, activation):
    block, ref = make_pair(position, causal, activation)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, DIM))
    dy = rng.standard_normal((2, 7, DIM))  # the gradient of L = sum(y * dy)

    y_t, dx_t, grads_t = torch_forward_backward(block, x, dy, causal)
    y, cache = ref.forward(x)
    np.testing.assert_allclose(y, y_t, rtol=0, atol=1e-10)

    dx, grads = ref.backward(dy, cache)
    assert set(grads) == set(grads_t) == set(param_shapes(DIM, HIDDEN))
    np.testing.assert_allclose(dx, dx_t, rtol=0, atol=1e-10)
    for name, g in grads_t.items():
        assert grads[name].shape == g.shape, name
        np.testing.assert_allclose(grads[name], g, rtol=0, atol=1e-10, err_msg=name)
        if name == "attn.k_proj.bias":
            # Exactly zero in theory: the key bias adds q . b_k to every score of a row alike, and
            # softmax ignores a constant added to a whole row.
            assert np.abs(g).max() < 1e-12
        else:
            assert np.abs(g).max() > 1e-3, f"{name}: gradient is ~0, the comparison would prove nothing"


@pytest.mark.parametrize(("position", "causal"), [("pre", True), ("post", False)])
def test_finite_differences(position, causal):
    """Central differences ``(L(w + h) - L(w - h)) / 2h`` on a few entries of the input and parameters."""
    _, ref = make_pair(position, causal, "gelu", seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 5, DIM))
    dy = rng.standard_normal((2, 5, DIM))

    def loss() -> float:
        return float((ref.forward(x)[0] * dy).sum())

    dx, grads = ref.backward(dy, ref.forward(x)[1])
    targets = [("x", x, dx)] + [(n, ref.params[n], grads[n]) for n in (
        "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "attn.o_proj.bias",
        "attn_norm.weight", "ffn_norm.bias", "ffn.up.weight", "ffn.down.bias",
    )]
    h = 1e-6
    for name, array, analytic in targets:
        for flat in rng.choice(array.size, size=3, replace=False):
            idx = np.unravel_index(flat, array.shape)
            saved = array[idx]
            array[idx] = saved + h
            plus = loss()
            array[idx] = saved - h
            minus = loss()
            array[idx] = saved
            numeric = (plus - minus) / (2 * h)
            assert numeric == pytest.approx(analytic[idx], rel=1e-6, abs=1e-7), (name, idx)


def test_causal_block_ignores_the_future():
    _, ref = make_pair("pre", True, "gelu")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 6, DIM))
    x2 = x.copy()
    x2[:, 4:] = rng.standard_normal((1, 2, DIM))
    y, _ = ref.forward(x)
    y2, _ = ref.forward(x2)
    np.testing.assert_array_equal(y[:, :4], y2[:, :4])
    assert not np.allclose(y[:, 4:], y2[:, 4:])


def test_bad_input_names_the_problem():
    ref = NumpyTransformerBlock.init(DIM, HEADS)
    with pytest.raises(ValueError, match=r"\(batch, seq, 16\)"):
        ref.forward(np.zeros((2, 3, 8)))
    with pytest.raises(ValueError, match="not divisible by n_heads=5"):
        NumpyTransformerBlock.init(DIM, 5)
    params = dict(ref.params)
    del params["ffn.down.bias"]
    with pytest.raises(KeyError, match="ffn.down.bias"):
        NumpyTransformerBlock(params, HEADS)
    with pytest.raises(ValueError, match="norm_position"):
        NumpyTransformerBlock.init(DIM, HEADS, norm_position="middle")
