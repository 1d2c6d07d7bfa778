"""Linear layers whose weight is stored quantized and dequantized on the fly.

``Int8Linear`` and ``NF4Linear`` stand in for ``nn.Linear``: the same ``in_features``,
``out_features``, ``bias`` and a read-only ``weight`` property that dequantizes (float32), so code
that only reads a layer's weight (``glassformer.peft.LoraLinear`` wrapping a base layer, duck-typed)
works on either. The packed tensors are buffers, so ``state_dict()`` and safetensors hold exactly
the layouts documented in :mod:`glassformer.quant.int8` and :mod:`glassformer.quant.nf4`.

Two ways through ``forward``: on a CPU, 1 to 8 rows without autograd through the input (a decoding
step at batch 1 to 8), or up to ``KERNEL_ROWS`` rows with autograd off (a short prompt, 8 rows per
call), go to the C kernels of :mod:`glassformer.quant.kernel`, which read the packed buffers in
place; anything else (a long prompt, a training batch, another device, no kernels) dequantizes
the weight and calls ``F.linear``. ``decode_path`` says which one a decoding step takes, and why
when it is PyTorch. The weights are frozen: quantized layers do not train (QLoRA trains adapters on top).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.kernels import isa
from glassformer.kernels.build import load
from glassformer.kernels.decode import INT4, INT8
from glassformer.quant.int8 import Int8Rows, int8_matmul, quantize_rows
from glassformer.quant.kernel import (
    BLOCK,
    MAX_ROWS,
    Plan,
    int4_plan,
    int8_plan,
    int8_rowsum,
    kernel_status,
    warn_fallback_once,
)
from glassformer.quant.nf4 import BLOCKSIZE, Packed4bit, QuantType, code_table, dequantize_4bit, quantize_4bit

# what the C kernels read of a layer: (kind, weight, scale, rowsum, code, bias), see kernel_args
KernelArgs = tuple[int, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]

# Rows the kernels take, 8 per call, before dequantizing for one matrix product wins: measured on
# a 768 x 3072 layer, 16 calls still beat dequantize + F.linear (1.5x int8, 1.3x NF4) on 1 thread.
KERNEL_ROWS = 128


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

    def forward(self, x: Tensor) -> Tensor:
        """Written for little overhead: a decoding step of a 30-layer model calls it 200 times."""
        if (
            x.is_cpu
            and x.is_floating_point()
            and x.dim() > 0
            and x.shape[-1] == self.in_features
            and 0 < x.numel() <= (MAX_ROWS if (grad := torch.is_grad_enabled()) else KERNEL_ROWS) * self.in_features
            and not (grad and x.requires_grad)
            and (plan := self._plan()) is not None
        ):
            return self._kernel_forward(plan, x)
        self._check_input(x)
        return self._torch_forward(x)

    def _kernel_forward(self, plan: Plan, x: Tensor) -> Tensor:
        """The kernel over ``x``'s rows, 8 at a time: each call streams the packed weight once, which
        still beats dequantizing the whole matrix for ``F.linear`` up to ``KERNEL_ROWS`` rows."""
        n = x.numel() // self.in_features
        if n <= MAX_ROWS:
            y = plan(x)
        else:
            flat = x.reshape(n, self.in_features)  # (N, in)
            y = torch.cat([plan(flat[i : i + MAX_ROWS]) for i in range(0, n, MAX_ROWS)])  # (N, out)
            y = y.view(*x.shape[:-1], self.out_features)
        return y if x.dtype == torch.float32 else y.to(x.dtype)  # a no-op .to() costs a dispatch

    def _plan(self) -> Plan | None:
        """The kernel call for this layer's buffers (None: PyTorch), remade when a buffer or the
        loaded library changes; the first miss of the kernels says why, once."""
        key = (id(load()), *((t._version, t.data_ptr()) for t in self._kernel_sources()))
        entry = self.__dict__.get("_kernel_plan")
        if entry is None or entry[0] != key:
            lib, why = kernel_status()
            if why is not None:
                warn_fallback_once(why, stacklevel=5)
            args = self._kernel_args() if lib is not None and self._layer_reason() is None else None
            entry = (key, None if args is None else self._make_plan(args), args)
            self.__dict__["_kernel_plan"] = entry  # not a buffer: stays out of state_dict and .to()
        return entry[1]

    def kernel_args(self) -> KernelArgs | None:
        """The buffers the C kernels read, fresh (remade like the plan), or None when this layer
        decodes with PyTorch: ``(kind, weight, scale, rowsum, code, bias)``, kind 0 int8 (per-row
        scale, row sums of the codes), 1 4-bit (per-block scales, the 16-value code table)."""
        self._plan()
        return self.__dict__["_kernel_plan"][2]

    @property
    def decode_path(self) -> str:
        """What multiplies a decoding step's rows (1 to 8, on a CPU, without autograd):
        ``kernel (avx2)`` naming the instruction-set path, or ``torch: <why not the kernel>``."""
        lib, why = kernel_status()
        reason = self._layer_reason() if lib is not None else why
        return f"torch: {reason}" if reason else f"kernel ({isa(lib)})" + (f", {why}" if why else "")

    def _layer_reason(self) -> str | None:
        """Why this layer cannot use the kernel (None when it can)."""
        device = next(iter(self.buffers())).device
        return None if device.type == "cpu" else f"the weights are on {device}"

    @abc.abstractmethod
    def _kernel_sources(self) -> tuple[Tensor, ...]:
        """The tensors the kernel reads: a change to any remakes the plan."""

    @abc.abstractmethod
    def _kernel_args(self) -> KernelArgs:
        """What :meth:`kernel_args` returns, computed from the buffers (row sums, dequantized scales)."""

    @abc.abstractmethod
    def _make_plan(self, args: KernelArgs) -> Plan:
        """The C kernel's ``x -> x @ weight.T + bias``, float32, for 1 to 8 rows of x."""

    def _torch_forward(self, x: Tensor) -> Tensor:
        """Dequantize, then ``F.linear`` in float32: any number of rows, any device, autograd."""
        return F.linear(x.float(), self.weight, self.bias).to(x.dtype)

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

    def _layer_reason(self) -> str | None:
        if self.threshold is not None:
            return f"LLM.int8() outlier decomposition (threshold={self.threshold}) runs in PyTorch"
        return super()._layer_reason()

    def _kernel_sources(self) -> tuple[Tensor, ...]:
        return (self.qweight, self.scale) + (() if self.bias is None else (self.bias,))

    def _kernel_args(self) -> KernelArgs:
        return INT8, self.qweight, self.scale, int8_rowsum(self.qweight), None, self.bias

    def _make_plan(self, args: KernelArgs) -> Plan:
        _, qweight, scale, rowsum, _, bias = args
        return int8_plan(qweight, scale, rowsum, bias)

    def _torch_forward(self, x: Tensor) -> Tensor:
        if self.threshold is None:
            return super()._torch_forward(x)
        flat = x.reshape(-1, self.in_features)  # (N, in)
        out = int8_matmul(flat, Int8Rows(self.qweight, self.scale), self.threshold)  # (N, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        threshold = f", threshold={self.threshold}" if self.threshold is not None else ""
        return super().extra_repr() + threshold + f", decode_path={self.decode_path!r}"


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

    def _layer_reason(self) -> str | None:
        if self.in_features % BLOCK:
            return (f"in_features={self.in_features} is not a multiple of {BLOCK}, so 4-bit blocks cross "
                    "weight rows")  # fmt: skip
        return super()._layer_reason()

    def _kernel_sources(self) -> tuple[Tensor, ...]:
        sources = (self.packed, self.absmax_q, self.absmax_scale, self.absmax_offset)
        return sources + (() if self.bias is None else (self.bias,))

    def _kernel_args(self) -> KernelArgs:
        scales = self.packed_weight().absmax().float().contiguous()  # (blocks,): double quantization undone once
        return INT4, self.packed, scales, None, code_table(self.quant_type), self.bias

    def _make_plan(self, args: KernelArgs) -> Plan:
        _, packed, scales, _, code, bias = args
        return int4_plan(packed, scales, code, bias, self.out_features, self.in_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", quant_type={self.quant_type}, decode_path={self.decode_path!r}"
