"""Exact greedy decoding that reads a quarter of the output head: score roughly, then check.

GPT-2's output head is a 50257 x 768 matrix, 154 MB in float32, a third of all the bytes a
decoding step reads. Greedy decoding needs only its arg-max, and almost every token is far from
winning. :class:`ShortlistHead` therefore scores the whole vocabulary with an int8 copy of the
head (one scale per row, 39 MB), then recomputes in float32 only the rows that could still hold
the maximum, and returns logits that are ``-inf`` everywhere else. The arg-max is the one of the
full float32 logits, not an approximation of it:

for row ``o``, ``w_o = s_o * q_o + e_o`` (int8 ``q_o``, rounding error ``e_o``), so the exact
logit ``w_o . h`` differs from the int8 score ``s_o (q_o . h)`` by ``e_o . h``, at most
``|e_o| |h|`` (Cauchy-Schwarz), plus float32 rounding of both sums, at most ``(n + 2) u`` times
``|s_o q_o| |h|`` and ``|w_o| |h|`` (``u = 2^-24``; the classic bound for any summation order).
With ``margin_o`` that sum of norms, precomputed per row, and ``m = |h|``, every row whose score
plus ``m * margin_o`` falls below the best score minus its own ``m * margin`` provably loses; the
rest (about ten rows for random GPT-2 weights) are the shortlist. Ties at the level of float32
rounding may resolve either way, exactly as they do between any two float32 implementations.
Both passes over the vocabulary (the int8 scores and the selection) run in C (``kernels/linear.c``).

Used by ``generate`` for greedy decoding without a repetition penalty or returned logits, when
the model accepts an ``lm_head=`` override and the C kernels are available.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from glassformer.kernels.build import load
from glassformer.kernels.linear import TILE, pack_weight

UNIT_ROUNDOFF = 2.0**-24  # float32
MAX_SHORTLIST = 2048  # beyond this many rows a row is cheaper to score in full


class ShortlistHead:
    """Greedy-exact logits of a linear output head: exact where a token can win, ``-inf`` elsewhere."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        if weight.dim() != 2 or weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError(
                f"ShortlistHead takes a float32 CPU (vocab, dim) weight, got {tuple(weight.shape)} "
                f"{weight.dtype} on {weight.device}"
            )
        self.weight, self.bias = weight, bias
        # float32 throughout (float64 would take seconds for a 50k-row head); the 1e-3 added to
        # the margin covers the float32 error of these norms (at most ~n * 2^-24 relative)
        w = weight.detach()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-30)  # (V,) one scale per row
        q = torch.round(w / scale[:, None]).clamp_(-127, 127)  # (V, C) integers, held in float32
        error = torch.linalg.vector_norm(w - q * scale[:, None], dim=1)  # (V,) |e_o|
        rounding = (weight.shape[1] + 2) * UNIT_ROUNDOFF * (
            torch.linalg.vector_norm(q, dim=1) * scale + torch.linalg.vector_norm(w, dim=1)
        )
        self.margin = ((error.double() + rounding.double()) * (1 + 1e-3)).contiguous()  # (V,) float64
        self.scale = scale.float()
        self.packed = pack_weight(q.to(torch.int8), dtype=torch.int8)  # (ceil(V/32), C, 32)
        self.stamp = _stamp(weight)

    def scores(self, rows: Tensor) -> Tensor:
        """``(R, C)`` hidden rows -> ``(R, V)`` int8-weight scores (the C kernel)."""
        lib = load()
        if lib is None:
            raise RuntimeError("ShortlistHead needs the glassformer C kernels")
        v = self.weight.shape[0]
        out = torch.empty(rows.shape[0], v, dtype=torch.float32)
        lib.gf_linear_q8(
            rows.data_ptr(), rows.stride(0), self.packed.data_ptr(), self.scale.data_ptr(), out.data_ptr(),
            rows.shape[0], rows.shape[1], v,
        )  # fmt: skip
        return out

    def __call__(self, hidden: Tensor) -> Tensor:
        """``(..., C)`` final hidden states -> ``(..., V)`` logits, exact on the shortlist."""
        lib = load()
        shape = hidden.shape
        rows = hidden.reshape(-1, shape[-1]).to(torch.float32).contiguous()  # (R, C)
        score = self.scores(rows)  # (R, V)
        v = self.weight.shape[0]
        logits = torch.full((rows.shape[0], v), float("-inf"))
        found = torch.empty(MAX_SHORTLIST, dtype=torch.int64)
        bias_ptr = None if self.bias is None else self.bias.detach().contiguous().data_ptr()
        for r in range(rows.shape[0]):
            hnorm = float(rows[r].double().norm()) * (1 + 1e-6)
            n = lib.gf_shortlist(
                score[r].data_ptr(), bias_ptr, self.margin.data_ptr(), hnorm, v, found.data_ptr(), MAX_SHORTLIST
            )
            if n > MAX_SHORTLIST:  # a flat distribution: no shortcut, score the row in full
                logits[r] = self.weight @ rows[r]
                if self.bias is not None:
                    logits[r] += self.bias
                continue
            tokens = found[:n]
            exact = self.weight.index_select(0, tokens) @ rows[r]  # (n,) float32, as the full head would
            if self.bias is not None:
                exact += self.bias.index_select(0, tokens)
            logits[r, tokens] = exact
        return logits.view(*shape[:-1], v)


def _stamp(weight: Tensor) -> tuple[int, int, tuple[int, ...]]:
    return weight.data_ptr(), weight._version, tuple(weight.shape)


def shortlist_head(model: nn.Module) -> ShortlistHead | None:
    """The model's :class:`ShortlistHead` (made once, remade when the head's weight changes), or
    None when it does not apply: no C kernels, no ``lm_head`` linear layer on a CPU in float32,
    or a ``forward`` without the ``lm_head=`` override."""
    head = getattr(model, "lm_head", None)
    if load() is None or not isinstance(head, nn.Linear) or "lm_head" not in _forward_params(model):
        return None
    w = head.weight
    if w.dtype != torch.float32 or w.device.type != "cpu" or w.shape[0] < 4 * TILE:
        return None
    cached = head.__dict__.get("_shortlist")
    if cached is None or cached.stamp != _stamp(w):
        with torch.no_grad():
            cached = ShortlistHead(w, head.bias)
        head.__dict__["_shortlist"] = cached  # not a buffer: stays out of state_dict
    return cached


def _forward_params(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()
