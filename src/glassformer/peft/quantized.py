"""QLoRA's base: the frozen linear layers stored in 4 bits (``glassformer.quant``), LoRA on top.

Dettmers et al. 2023. :func:`quantize_base` swaps a model's ``nn.Linear`` layers for
``NF4Linear`` (block 64, double-quantized scales) before the adapters go on; the adapters and the
modules trained in full stay float32. :func:`base_forward` runs a quantized base in training
without keeping its dequantized weight alive until backward: autograd through ``F.linear`` would
save that float32 copy (the weight is what the input's gradient needs), one per layer, which gives
back most of the memory the 4 bits saved. Here backward dequantizes again, as bitsandbytes'
``MatMul4Bit`` does: a little more compute for a peak that holds only the packed bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.quant import QuantLinear, quantize_model

# Formats a QLoRA base may be stored in: the 4-bit ones of glassformer.quant.
QLORA_FORMATS = ("nf4", "fp4")


def quantize_base(model: nn.Module, fmt: str, keep_float: Sequence[str] = ()) -> list[str]:
    """Quantize every ``nn.Linear`` of ``model`` to ``fmt`` in place, except ``lm_head`` and the
    modules named in ``keep_float`` (the ones that train in full); returns the quantized names."""
    skip = ["lm_head"]
    for name in keep_float:  # the module itself and every layer inside it, at any depth
        skip += [name, f"{name}.*", f"*.{name}", f"*.{name}.*"]
    quantize_model(model, to=fmt, skip=skip)  # type: ignore[arg-type]
    return list(model.quantization["layers"])


def is_quantized_layer(module: nn.Module) -> bool:
    """Whether a LoRA base layer is one of glassformer.quant's (its weight is a dequantized copy)."""
    return isinstance(module, QuantLinear)


class _RecomputedLinear(torch.autograd.Function):
    """``x @ W.T + b`` for a quantized ``W`` that saves nothing for backward but the layer itself."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, layer: QuantLinear) -> Tensor:
        ctx.layer, ctx.dtype = layer, x.dtype
        return F.linear(x.float(), layer.weight, layer.bias).to(x.dtype)  # (..., out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        weight = ctx.layer.weight  # (out, in), dequantized again
        return (grad.float() @ weight).to(ctx.dtype), None  # (..., in)


def base_forward(base: nn.Module, x: Tensor) -> Tensor:
    """``base(x)``; for a quantized base whose input needs a gradient, through :class:`_RecomputedLinear`."""
    if isinstance(base, QuantLinear) and torch.is_grad_enabled() and x.requires_grad:
        base._check_input(x)
        return _RecomputedLinear.apply(x, base)
    return base(x)


@torch.no_grad()
def dequantized(layer: nn.Module, delta: Tensor | None = None) -> nn.Linear:
    """A float32 ``nn.Linear`` holding ``layer``'s dequantized weight (plus ``delta``) and its bias."""
    weight = layer.weight.float()  # (out, in), dequantized once
    bias = getattr(layer, "bias", None)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=bias is not None, device=weight.device)
    linear.weight.copy_(weight if delta is None else weight + delta.to(weight.dtype))
    if bias is not None:
        linear.bias.copy_(bias.float())
    return linear.requires_grad_(False)


def dequantize_rest(model: nn.Module) -> list[str]:
    """Turn every quantized layer left in ``model`` back into a float ``nn.Linear``; drops the
    model's ``quantization`` record (it no longer describes the model). Returns the names."""
    names = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, dequantized(getattr(owner, child)))
    model.__dict__.pop("quantization", None)
    return names
