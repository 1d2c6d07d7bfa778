"""Linear layers whose weight is stored quantized and dequantized on the fly.

``Int8Linear`` and ``NF4Linear`` stand in for ``nn.Linear``: the same ``in_features``,
``out_features``, ``bias`` and a read-only ``weight`` property that dequantizes (float32), so code
that only reads a layer's weight (``glassformer.peft.LoraLinear`` wrapping a base layer, duck-typed)
works on either. The packed tensors are buffers, so ``state_dict()`` and safetensors hold exactly
the layouts documented in :mod:`glassformer.quant.int8` and :mod:`glassformer.quant.nf4`. The
forward is a float32 matmul with the dequantized weight for now; ``glassformer.kernels`` will read
the packed buffers directly. The weights are frozen: quantized layers do not train (QLoRA trains
adapters on top).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.quant.int8 import Int8Rows, int8_matmul, quantize_rows
from glassformer.quant.nf4 import BLOCKSIZE, Packed4bit, QuantType, dequantize_4bit, quantize_4bit


class QuantLinear(nn.Module, metaclass=abc.ABCMeta):
    """What every quantized linear shares: sizes, a frozen float32 bias, a dequantizing ``weight``."""

    format: str = ""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None

    @property
    @abc.abstractmethod
    def weight(self) -> Tensor:
        """The dequantized ``(out_features, in_features)`` float32 weight (a fresh tensor)."""

    def _set_bias(self, linear: nn.Linear) -> None:
        if self.bias is not None and linear.bias is not None:
            self.bias.data.copy_(linear.bias.detach().float())

    def _check_input(self, x: Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[-1]} features in its last dimension "
                             f"(shape {tuple(x.shape)}); this layer takes {self.in_features}")  # fmt: skip

    def nbytes(self) -> int:
        """Bytes this layer holds (packed weight, scales, bias)."""
        return sum(t.numel() * t.element_size() for t in (*self.buffers(), *self.parameters()))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(QuantLinear):
    """Weight-only int8 per output channel; ``threshold`` turns on LLM.int8()'s outlier path."""

    format = "int8"

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 threshold: float | None = None) -> None:  # fmt: skip
        super().__init__(in_features, out_features, bias)
        self.threshold = threshold
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))  # (out, in)
        self.register_buffer("scale", torch.zeros(out_features))  # (out,) float32

    @classmethod
    def from_linear(cls, linear: nn.Linear, threshold: float | None = None) -> Int8Linear:
        """Quantize an ``nn.Linear`` (any float dtype) into a new layer."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, threshold)
        rows = quantize_rows(linear.weight.detach())
        layer.qweight.copy_(rows.q)
        layer.scale.copy_(rows.scale)
        layer._set_bias(linear)
        return layer

    @property
    def weight(self) -> Tensor:
        return Int8Rows(self.qweight, self.scale).dequantize()

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.threshold is None:
            return F.linear(x.float(), self.weight, self.bias).to(x.dtype)
        flat = x.reshape(-1, self.in_features)  # (N, in)
        out = int8_matmul(flat, Int8Rows(self.qweight, self.scale), self.threshold)  # (N, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", threshold={self.threshold}" if self.threshold is not None else "")


class NF4Linear(QuantLinear):
    """4-bit NF4 (or FP4) weight, block 64, double-quantized scales (QLoRA's base layer)."""

    format = "nf4"

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 quant_type: QuantType = "nf4") -> None:  # fmt: skip
        super().__init__(in_features, out_features, bias)
        self.quant_type = quant_type
        numel = in_features * out_features
        blocks = -(-numel // BLOCKSIZE)
        self.register_buffer("packed", torch.zeros((numel + 1) // 2, dtype=torch.uint8))
        self.register_buffer("absmax_q", torch.zeros(blocks, dtype=torch.uint8))
        self.register_buffer("absmax_scale", torch.zeros(-(-blocks // 256)))
        self.register_buffer("absmax_offset", torch.zeros(()))

    @classmethod
    def from_linear(cls, linear: nn.Linear, quant_type: QuantType = "nf4") -> NF4Linear:
        """Quantize an ``nn.Linear`` (any float dtype) into a new layer."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, quant_type)
        q = quantize_4bit(linear.weight.detach(), quant_type)
        for name in ("packed", "absmax_q", "absmax_scale", "absmax_offset"):
            getattr(layer, name).copy_(getattr(q, name))
        layer._set_bias(linear)
        return layer

    def packed_weight(self) -> Packed4bit:
        """The buffers as a :class:`Packed4bit` (float32 result dtype)."""
        return Packed4bit(self.packed, self.absmax_q, self.absmax_scale, self.absmax_offset,
                          (self.out_features, self.in_features), torch.float32, self.quant_type)  # fmt: skip

    @property
    def weight(self) -> Tensor:
        return dequantize_4bit(self.packed_weight())

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return F.linear(x.float(), self.weight, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", quant_type={self.quant_type}"
