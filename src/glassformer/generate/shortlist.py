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

Where the CPU has int8 dot products (AVX-512 VNNI), the hidden state is quantized too,
``h = s_h q_h + e_h``, and the int8 x int8 sums are exact in int32; the score then also moves by
``s_o q_o . e_h``, at most ``|s_o q_o| |e_h|``, which joins the slack (``ShortlistHead.bound``).
Both passes over the vocabulary (the int8 scores and the selection) run in C (``kernels/linear.c``).

Used by ``generate`` for greedy decoding without a repetition penalty or returned logits, when
the model accepts an ``lm_head=`` override and the C kernels are available.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from glassformer.kernels.build import load
from glassformer.kernels.linear import TILE, huge_page_empty, pack_weight

UNIT_ROUNDOFF = 2.0**-24  # float32
MAX_SHORTLIST = 2048  # beyond this many rows a row is cheaper to score in full


class ShortlistHead:
    """Greedy-exact logits of a linear output head: exact where a token can win, ``-inf`` elsewhere."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, int8_dot: bool | None = None) -> None:
        """``int8_dot``: quantize the hidden state too and use int8 dot products (AVX-512 VNNI);
        None uses them where the compiled kernel has them."""
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
        self.scale = scale.contiguous()
        # |s_o q_o|: how much an error in a quantized hidden state can move row o's score
        self.qnorm = (torch.linalg.vector_norm(q, dim=1) * scale).double().mul_(1 + 1e-3).contiguous()
        lib = load()
        has_dot = lib is not None and bool(lib.gf_has_vnni())
        if int8_dot and not has_dot:
            raise ValueError("int8_dot=True needs a CPU with AVX-512 VNNI and the compiled kernels")
        self.dot_int8 = has_dot if int8_dot is None else int8_dot
        if self.dot_int8:  # int8 x int8 dot products: layout (tiles, G, 32, 4), see linear.c
            v, c = q.shape
            tiles, groups = -(-v // TILE), -(-c // 4)
            qi = torch.zeros(tiles * TILE, groups * 4, dtype=torch.int8)
            qi[:v, :c] = q.to(torch.int8)
            self.packed = huge_page_empty((tiles, groups, TILE, 4), torch.int8)
            self.packed.copy_(qi.view(tiles, TILE, groups, 4).permute(0, 2, 1, 3))
            self.rowsum = qi[:v].sum(dim=1, dtype=torch.int32).contiguous()  # (V,) for the +128 offset
        else:  # int8 weights widened to float32: layout (tiles, C, 32)
            self.packed = pack_weight(q.to(torch.int8), dtype=torch.int8)
        self.stamp = _stamp(weight)

    def _quantize(self, row: Tensor) -> tuple[Tensor, float, float]:
        """A hidden row as unsigned bytes (``q + 128``), its float32 scale, and ``xnorm``: a bound
        on ``|h - scale * q|`` plus the float32 rounding of the final ``scale_o * scale * int``."""
        c = row.shape[0]
        xscale = (row.abs().amax() / 127.0).clamp_min(1e-30)  # float32, exactly what C receives
        q = torch.round(row / xscale).clamp_(-127, 127)
        qd = q.double()
        error = float(torch.linalg.vector_norm(row.double() - qd * xscale.double()))
        xnorm = (error + 3 * UNIT_ROUNDOFF * float(xscale) * float(torch.linalg.vector_norm(qd))) * (1 + 1e-6)
        xq = torch.full((-(-c // 4) * 4,), 128, dtype=torch.uint8)
        xq[:c] = (q + 128).to(torch.uint8)
        return xq, float(xscale), xnorm

    def scores(self, rows: Tensor) -> tuple[Tensor, list[float]]:
        """``(R, C)`` hidden rows -> ``(R, V)`` int8 scores and, per row, the ``xnorm`` of its own
        quantization (0 when the rows stay float32)."""
        lib = load()
        if lib is None:
            raise RuntimeError("ShortlistHead needs the glassformer C kernels")
        v = self.weight.shape[0]
        out = torch.empty(rows.shape[0], v, dtype=torch.float32)
        if not self.dot_int8:
            lib.gf_linear_q8(
                rows.data_ptr(), rows.stride(0), self.packed.data_ptr(), self.scale.data_ptr(), out.data_ptr(),
                rows.shape[0], rows.shape[1], v,
            )  # fmt: skip
            return out, [0.0] * rows.shape[0]
        xnorms = []
        for r in range(rows.shape[0]):
            xq, xscale, xnorm = self._quantize(rows[r])
            lib.gf_linear_q8x8(
                xq.data_ptr(), self.packed.data_ptr(), self.rowsum.data_ptr(), self.scale.data_ptr(), xscale,
                out[r].data_ptr(), self.packed.shape[1], v,
            )  # fmt: skip
            xnorms.append(xnorm)
        return out, xnorms

    def bound(self, rows: Tensor, xnorms: list[float]) -> Tensor:
        """``(R, V)`` float64: how far each exact logit can be from its score (the slack)."""
        hnorm = rows.double().norm(dim=1, keepdim=True) * (1 + 1e-6)
        return hnorm * self.margin + torch.tensor(xnorms, dtype=torch.float64)[:, None] * self.qnorm

    def __call__(self, hidden: Tensor) -> Tensor:
        """``(..., C)`` final hidden states -> ``(..., V)`` logits, exact on the shortlist."""
        lib = load()
        shape = hidden.shape
        rows = hidden.reshape(-1, shape[-1]).to(torch.float32).contiguous()  # (R, C)
        score, xnorms = self.scores(rows)  # (R, V)
        v = self.weight.shape[0]
        logits = torch.full((rows.shape[0], v), float("-inf"))
        found = torch.empty(MAX_SHORTLIST, dtype=torch.int64)
        bias_ptr = None if self.bias is None else self.bias.detach().contiguous().data_ptr()
        for r in range(rows.shape[0]):
            hnorm = float(rows[r].double().norm()) * (1 + 1e-6)
            n = lib.gf_shortlist(
                score[r].data_ptr(), bias_ptr, self.margin.data_ptr(), hnorm, self.qnorm.data_ptr(), xnorms[r],
                v, found.data_ptr(), MAX_SHORTLIST,
            )  # fmt: skip
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
