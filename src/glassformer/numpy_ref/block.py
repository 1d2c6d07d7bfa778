"""One transformer block in NumPy: the forward pass and a backward pass written by hand.

Autograd hides the chain rule; this module spells it out. Each operation comes as a pair:
``*_forward`` returns the output and a *cache* (what the backward step needs), and
``*_backward`` takes the gradient of the loss with respect to the output (``d_out``, written
``dy`` below) and returns the gradients with respect to the inputs and parameters. The block
chains them, and its backward walks the same chain in reverse.

Notation: for a scalar loss ``L`` and any array ``a``, ``da`` means ``dL/da`` (same shape as ``a``).
Batched shapes: ``x`` is ``(B, T, C)``: batch, sequence, width; ``H`` heads of size ``D = C / H``.

Parameters live in a flat dict whose keys are the ``state_dict`` keys of
``glassformer.nn.blocks.TransformerBlock`` (``"attn.q_proj.weight"``, ``"ffn.up.bias"``...), and
linear weights keep PyTorch's ``(out_features, in_features)`` layout (``y = x @ W.T + b``), so a
torch block's weights copy over as they are. The tests check this block against that one in
float64, forward and backward, to 1e-10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

NormPosition = Literal["pre", "post"]
GeluKind = Literal["gelu", "gelu_tanh"]

Cache = dict[str, Any]
Grads = dict[str, np.ndarray]


def param_shapes(dim: int, ffn_dim: int) -> dict[str, tuple[int, ...]]:
    """Every parameter of the block and its shape, under the torch block's ``state_dict`` keys."""
    shapes: dict[str, tuple[int, ...]] = {}
    for norm in ("attn_norm", "ffn_norm"):
        shapes[f"{norm}.weight"] = (dim,)
        shapes[f"{norm}.bias"] = (dim,)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        shapes[f"attn.{proj}.weight"] = (dim, dim)
        shapes[f"attn.{proj}.bias"] = (dim,)
    shapes["ffn.up.weight"] = (ffn_dim, dim)
    shapes["ffn.up.bias"] = (ffn_dim,)
    shapes["ffn.down.weight"] = (dim, ffn_dim)
    shapes["ffn.down.bias"] = (dim,)
    return shapes


# --------------------------------------------------------------------------------------------
# Linear layer: y = x @ W.T + b
# --------------------------------------------------------------------------------------------


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``(..., in) -> (..., out)``."""
    return x @ weight.T + bias


def linear_backward(
    dy: np.ndarray, x: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``y = x @ W.T + b``; returns ``(dx, dW, db)``.

    Element-wise ``y[n, o] = sum_i x[n, i] W[o, i] + b[o]`` (``n`` runs over every leading index:
    batch and time). Differentiating:

    * ``dy/dx[n, i] = W[o, i]``        -> ``dx = dy @ W``
    * ``dy/dW[o, i] = x[n, i]``, and W is shared by every ``n`` so contributions add up
                                         -> ``dW = sum_n dy[n]^T x[n] = dy_flat.T @ x_flat``
    * ``dy/db[o] = 1`` for every ``n``  -> ``db = sum_n dy[n]``
    """
    dx = dy @ weight
    dy_flat = dy.reshape(-1, dy.shape[-1])
    x_flat = x.reshape(-1, x.shape[-1])
    return dx, dy_flat.T @ x_flat, dy_flat.sum(axis=0)


# --------------------------------------------------------------------------------------------
# LayerNorm: y = (x - mean) / sqrt(var + eps) * gamma + beta, over the last axis
# --------------------------------------------------------------------------------------------


def layernorm_forward(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float
) -> tuple[np.ndarray, Cache]:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)  # biased variance (divide by C), as torch does
    rstd = 1.0 / np.sqrt(var + eps)  # "reciprocal standard deviation"
    xhat = (x - mean) * rstd
    return xhat * gamma + beta, {"xhat": xhat, "rstd": rstd, "gamma": gamma}


def layernorm_backward(dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(dx, dgamma, dbeta)``.

    The affine part is easy: ``dgamma = sum_n dy * xhat``, ``dbeta = sum_n dy``, and
    ``dxhat = dy * gamma``.

    The normalization couples all ``C`` features of a row through the mean ``mu`` and the
    standard deviation ``s = sqrt(var + eps)``: ``xhat_j = (x_j - mu) / s``. Its Jacobian is

        d xhat_j / d x_i = (1/s) * (delta_ij - 1/C - xhat_i * xhat_j / C)

    because ``d mu / d x_i = 1/C`` and ``d s / d x_i = (x_i - mu) / (C s) = xhat_i / C``. Contracting
    it with ``dxhat``:

        dx_i = (1/s) * (dxhat_i - mean_j(dxhat_j) - xhat_i * mean_j(dxhat_j * xhat_j))

    Read it as: remove from the incoming gradient its component along the all-ones direction
    (shifting every input by the same amount does not change ``xhat``) and along ``xhat`` itself
    (scaling the centred input does not change ``xhat`` either), then undo the ``1/s`` scaling.
    """
    xhat, rstd, gamma = cache["xhat"], cache["rstd"], cache["gamma"]
    c = xhat.shape[-1]
    dgamma = (dy * xhat).reshape(-1, c).sum(axis=0)
    dbeta = dy.reshape(-1, c).sum(axis=0)
    dxhat = dy * gamma
    dx = rstd * (
        dxhat
        - dxhat.mean(axis=-1, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)
    )
    return dx, dgamma, dbeta


# --------------------------------------------------------------------------------------------
# GELU, exact (erf) or the tanh approximation
# --------------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is exact to double
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


def gelu_forward(x: np.ndarray, kind: GeluKind) -> np.ndarray:
    """``gelu(x) = x * Phi(x)``, with ``Phi`` the standard normal CDF.

    ``"gelu"`` is exact: ``Phi(x) = (1 + erf(x / sqrt 2)) / 2`` (BERT, torch's default).
    ``"gelu_tanh"`` is GPT-2's approximation ``Phi(x) ~ (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2``.
    """
    if kind == "gelu":
        return x * 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3)))
    raise ValueError(f"unknown GELU kind {kind!r}; expected 'gelu' or 'gelu_tanh'")


def gelu_backward(dy: np.ndarray, x: np.ndarray, kind: GeluKind) -> np.ndarray:
    """Element-wise, so ``dx = dy * gelu'(x)``.

    Exact: by the product rule ``gelu'(x) = Phi(x) + x * phi(x)`` where
    ``phi(x) = exp(-x^2/2) / sqrt(2 pi)`` is the normal density (the derivative of ``Phi``).

    Tanh: with ``u = sqrt(2/pi) (x + c x^3)`` and ``t = tanh(u)``,
    ``gelu'(x) = (1 + t)/2 + x/2 * (1 - t^2) * sqrt(2/pi) (1 + 3 c x^2)``, using ``tanh' = 1 - tanh^2``.
    """
    if kind == "gelu":
        cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
        return dy * (cdf + x * pdf)
    if kind == "gelu_tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _GELU_TANH_C * x**3))
        du_dx = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * x**2)
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t**2) * du_dx)
    raise ValueError(f"unknown GELU kind {kind!r}; expected 'gelu' or 'gelu_tanh'")


# --------------------------------------------------------------------------------------------
# Softmax over the last axis
# --------------------------------------------------------------------------------------------


def softmax(s: np.ndarray) -> np.ndarray:
    """Subtracting the row maximum changes nothing mathematically (it cancels in the ratio) but
    keeps ``exp`` from overflowing; masked entries hold ``-inf`` and become exactly 0."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dp: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``ds`` from ``dp`` for ``p = softmax(s)`` along the last axis.

    The Jacobian of one row is ``dp_j / ds_i = p_j (delta_ij - p_i)``, i.e. ``diag(p) - p p^T``.
    It is symmetric, so ``ds = (diag(p) - p p^T) dp``, which without forming the ``n x n`` matrix is

        ds_i = p_i * (dp_i - sum_j p_j dp_j)

    Masked positions have ``p_i = 0`` and so receive no gradient, as they should.
    """
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


# --------------------------------------------------------------------------------------------
# Multi-head self-attention
# --------------------------------------------------------------------------------------------


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """``(B, T, H*D) -> (B, H, T, D)``. Its backward is :func:`merge_heads` (a pure re-indexing)."""
    b, t, c = x.shape
    return x.reshape(b, t, n_heads, c // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """``(B, H, T, D) -> (B, T, H*D)``. Its backward is :func:`split_heads`."""
    b, h, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def attention_forward(
    x: np.ndarray, params: dict[str, np.ndarray], n_heads: int, causal: bool
) -> tuple[np.ndarray, Cache]:
    """``o_proj(softmax(Q K^T / sqrt(D) + mask) V)`` with ``Q, K, V`` projected from ``x``."""
    p = {name: params[f"attn.{name}"] for name in (
        "q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
        "v_proj.weight", "v_proj.bias", "o_proj.weight", "o_proj.bias",
    )}
    q = split_heads(linear_forward(x, p["q_proj.weight"], p["q_proj.bias"]), n_heads)  # (B, H, T, D)
    k = split_heads(linear_forward(x, p["k_proj.weight"], p["k_proj.bias"]), n_heads)
    v = split_heads(linear_forward(x, p["v_proj.weight"], p["v_proj.bias"]), n_heads)
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (B, H, T, T)
    if causal:
        t = x.shape[1]
        future = np.triu(np.ones((t, t), dtype=bool), k=1)  # key index > query index
        scores = np.where(future, -np.inf, scores)
    weights = softmax(scores)  # (B, H, T, T), rows sum to 1
    mixed = merge_heads(weights @ v)  # (B, T, C)
    out = linear_forward(mixed, p["o_proj.weight"], p["o_proj.bias"])
    cache = {"x": x, "q": q, "k": k, "v": v, "weights": weights, "mixed": mixed, "scale": scale}
    return out, cache


def attention_backward(
    d_out: np.ndarray, cache: Cache, params: dict[str, np.ndarray], n_heads: int
) -> tuple[np.ndarray, Grads]:
    """Walk the attention forward in reverse. Returns ``(dx, grads of the attn.* parameters)``."""
    grads: Grads = {}
    x, q, k, v, weights, scale = (cache[n] for n in ("x", "q", "k", "v", "weights", "scale"))

    # out = mixed @ Wo^T + bo
    d_mixed, grads["attn.o_proj.weight"], grads["attn.o_proj.bias"] = linear_backward(
        d_out, cache["mixed"], params["attn.o_proj.weight"]
    )
    d_ctx = split_heads(d_mixed, n_heads)  # (B, H, T, D), undoing merge_heads

    # ctx = P @ V, a batched matrix product: dP = dctx @ V^T and dV = P^T @ dctx.
    d_weights = d_ctx @ v.swapaxes(-1, -2)  # (B, H, T, T)
    dv = weights.swapaxes(-1, -2) @ d_ctx  # (B, H, T, D)

    # P = softmax(S): the softmax Jacobian (see softmax_backward). The causal mask added a
    # constant (-inf) to some scores; constants have no gradient, and those P entries are 0.
    d_scores = softmax_backward(d_weights, weights)

    # S = Q K^T * scale: dQ = dS @ K * scale and dK = dS^T @ Q * scale.
    dq = (d_scores @ k) * scale
    dk = (d_scores.swapaxes(-1, -2) @ q) * scale

    # Q, K and V were each projected from the same x, so x collects three gradients.
    dx = np.zeros_like(x)
    for name, d_heads in (("q_proj", dq), ("k_proj", dk), ("v_proj", dv)):
        dx_part, grads[f"attn.{name}.weight"], grads[f"attn.{name}.bias"] = linear_backward(
            merge_heads(d_heads), x, params[f"attn.{name}.weight"]
        )
        dx += dx_part
    return dx, grads


# --------------------------------------------------------------------------------------------
# Feed-forward network: down(gelu(up(x)))
# --------------------------------------------------------------------------------------------


def ffn_forward(x: np.ndarray, params: dict[str, np.ndarray], kind: GeluKind) -> tuple[np.ndarray, Cache]:
    pre = linear_forward(x, params["ffn.up.weight"], params["ffn.up.bias"])  # (B, T, hidden)
    act = gelu_forward(pre, kind)
    out = linear_forward(act, params["ffn.down.weight"], params["ffn.down.bias"])  # (B, T, C)
    return out, {"x": x, "pre": pre, "act": act}


def ffn_backward(
    d_out: np.ndarray, cache: Cache, params: dict[str, np.ndarray], kind: GeluKind
) -> tuple[np.ndarray, Grads]:
    grads: Grads = {}
    d_act, grads["ffn.down.weight"], grads["ffn.down.bias"] = linear_backward(
        d_out, cache["act"], params["ffn.down.weight"]
    )
    d_pre = gelu_backward(d_act, cache["pre"], kind)
    dx, grads["ffn.up.weight"], grads["ffn.up.bias"] = linear_backward(d_pre, cache["x"], params["ffn.up.weight"])
    return dx, grads


# --------------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------------


@dataclass
class NumpyTransformerBlock:
    """Self-attention and a GELU feed-forward, each inside a residual connection with a LayerNorm.

    * ``"pre"``:  ``h = x + attn(ln1(x))``;  ``y = h + ffn(ln2(h))``
    * ``"post"``: ``h = ln1(x + attn(x))``;  ``y = ln2(h + ffn(h))``

    ``ln1``/``ln2`` are ``attn_norm``/``ffn_norm`` in the parameter names. A residual connection
    ``y = x + f(x)`` sends the incoming gradient down *both* paths: ``dx = dy + (df/dx)^T dy``; this
    identity path is why deep residual stacks train at all.
    """

    params: dict[str, np.ndarray]
    n_heads: int
    norm_position: NormPosition = "pre"
    causal: bool = False
    activation: GeluKind = "gelu"
    eps: float = 1e-5
    dim: int = field(init=False)

    def __post_init__(self) -> None:
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"activation must be 'gelu' or 'gelu_tanh', got {self.activation!r}")
        if "attn_norm.weight" not in self.params:
            raise KeyError("params has no 'attn_norm.weight'; expected the keys of param_shapes()")
        self.dim = int(self.params["attn_norm.weight"].shape[0])
        if self.dim % self.n_heads != 0:
            raise ValueError(f"dim={self.dim} is not divisible by n_heads={self.n_heads}")
        ffn_dim = int(self.params["ffn.up.weight"].shape[0]) if "ffn.up.weight" in self.params else 0
        expected = param_shapes(self.dim, ffn_dim)
        missing = sorted(set(expected) - set(self.params))
        extra = sorted(set(self.params) - set(expected))
        if missing or extra:
            raise KeyError(f"block parameters do not match: missing {missing}, unexpected {extra}")
        for name, shape in expected.items():
            if tuple(self.params[name].shape) != shape:
                raise ValueError(f"parameter {name} has shape {self.params[name].shape}, expected {shape}")

    @classmethod
    def init(
        cls, dim: int, n_heads: int, ffn_dim: int | None = None, seed: int = 0, **kwargs: Any
    ) -> NumpyTransformerBlock:
        """Random weights (std 0.2, so every path carries a visible signal) and random norm affines."""
        rng = np.random.default_rng(seed)
        shapes = param_shapes(dim, ffn_dim or 4 * dim)
        params = {}
        for name, shape in shapes.items():
            base = 1.0 if name.endswith("norm.weight") else 0.0
            params[name] = base + 0.2 * rng.standard_normal(shape)
        return cls(params, n_heads, **kwargs)

    def _ln(self, which: str, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        return layernorm_forward(x, self.params[f"{which}.weight"], self.params[f"{which}.bias"], self.eps)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Cache]:
        """``x (B, T, C) -> y (B, T, C)``, plus the cache :meth:`backward` needs."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"block input must be (batch, seq, {self.dim}); got {x.shape}")
        c: Cache = {}
        if self.norm_position == "pre":
            a_in, c["ln1"] = self._ln("attn_norm", x)
            a, c["attn"] = attention_forward(a_in, self.params, self.n_heads, self.causal)
            h = x + a
            f_in, c["ln2"] = self._ln("ffn_norm", h)
            f, c["ffn"] = ffn_forward(f_in, self.params, self.activation)
            y = h + f
        else:
            a, c["attn"] = attention_forward(x, self.params, self.n_heads, self.causal)
            h, c["ln1"] = self._ln("attn_norm", x + a)
            f, c["ffn"] = ffn_forward(h, self.params, self.activation)
            y, c["ln2"] = self._ln("ffn_norm", h + f)
        return y, c

    def backward(self, dy: np.ndarray, cache: Cache) -> tuple[np.ndarray, Grads]:
        """Given ``dL/dy``, return ``dL/dx`` and ``dL/dparam`` for every parameter."""
        grads: Grads = {}

        def ln_back(which: str, d: np.ndarray, key: str) -> np.ndarray:
            dx, grads[f"{which}.weight"], grads[f"{which}.bias"] = layernorm_backward(d, cache[key])
            return dx

        if self.norm_position == "pre":
            # y = h + ffn(ln2(h)): the residual hands dy to h directly, and through the FFN branch.
            d_f_in, g = ffn_backward(dy, cache["ffn"], self.params, self.activation)
            grads.update(g)
            dh = dy + ln_back("ffn_norm", d_f_in, "ln2")
            # h = x + attn(ln1(x)): same pattern one level down.
            d_a_in, g = attention_backward(dh, cache["attn"], self.params, self.n_heads)
            grads.update(g)
            dx = dh + ln_back("attn_norm", d_a_in, "ln1")
        else:
            # y = ln2(h + f): first through the norm, then the sum splits to both terms.
            d_sum2 = ln_back("ffn_norm", dy, "ln2")
            d_h_ffn, g = ffn_backward(d_sum2, cache["ffn"], self.params, self.activation)
            grads.update(g)
            dh = d_sum2 + d_h_ffn
            # h = ln1(x + a), a = attn(x)
            d_sum1 = ln_back("attn_norm", dh, "ln1")
            dx_attn, g = attention_backward(d_sum1, cache["attn"], self.params, self.n_heads)
            grads.update(g)
            dx = d_sum1 + dx_attn
        return dx, grads
