"""Lay linear weights out in memory the way MKL's matrix-vector products read them fastest.

This is the fallback for CPUs where glassformer's own kernels cannot be compiled
(``glassformer.kernels``, which are faster still); ``generate`` picks one or the other.

Decoding one token per step turns every linear layer into a matrix-vector product, and on a CPU
that is bound by how fast the weight matrix streams in from memory: each weight is read once
per token and used for one multiply-add. ``nn.Linear`` keeps ``W`` as ``(out, in)`` row-major and
computes ``x @ W.T``; handed that, MKL's kernel streams the matrix at roughly half the speed it
manages for ``x @ M`` with ``M = W.T`` stored contiguously (the layout of GPT-2's original
``Conv1D``). On the 2-core machine these benchmarks ran on, GPT-2's 50257x768 output head took
13 ms per token one way and 7 ms the other.

``decode_layout(model)`` therefore re-stores each linear weight *column-major*: same shape, same
values, same ``Parameter`` object, only the strides change (``W.t().contiguous().t()``), so
``F.linear`` hands MKL the fast layout without any copy per call. Everything else keeps working:
autograd gives gradients of the same layout, optimizers update in place, and saving writes
``.contiguous()`` tensors. A weight tied to an embedding (GPT-2's ``wte``) moves with it; looking
up a few rows of a column-major table is cheap.
"""

from __future__ import annotations

import torch
from torch import nn


def decode_layout(model: nn.Module) -> int:
    """Store every CPU ``nn.Linear`` weight column-major (idempotent). Returns how many moved."""
    moved = 0
    with torch.no_grad():
        for module in model.modules():
            if not isinstance(module, nn.Linear):
                continue
            weight = module.weight
            if weight.device.type != "cpu" or weight.dim() != 2 or min(weight.shape) < 2:
                continue
            if weight.t().is_contiguous():
                continue  # already column-major (or shared with a weight that was moved)
            weight.data = weight.data.t().contiguous().t()
            moved += 1
    return moved
