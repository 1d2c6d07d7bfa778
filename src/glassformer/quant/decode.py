"""A quantized Llama-style stack decodes one token at batch 1 in a single C call.

At 8 or 4 bits a small model's decoding step reads so little memory that the time goes to
dispatching PyTorch operations instead: SmolLM2-135M spends about 13 ms of a 27 ms step on ~35
small operations per block across 30 blocks. :class:`FusedDecode` is the stack's ``decode_hook``
(``glassformer.nn.blocks.TransformerStack``): it hands the whole step to ``kernels/decode.c``,
which calls the same int8/4-bit kernels the layers call and does the norms, rotary embedding,
KV-cache write and attention itself.

It runs only where it computes what the blocks compute: pre-norm blocks with RMSNorm, rotary
embeddings, (grouped-query) self-attention without masks or biases, a SiLU-gated feed-forward,
every linear layer an :class:`Int8Linear` (weight-only) or :class:`NF4Linear` on the kernels, a
float32 static KV cache, one row, one new token, eval mode and no autograd. Anything else (a LoRA
adapter wrapped around a layer, a prompt, a batch, a dynamic cache) returns None and the blocks
run as usual, so the hook never changes what a model means, only how fast a step is. The layers
are looked at once per KV cache, that is once per generation (a new cache, a new look): a layer
swapped or a weight loaded between two ``generate`` calls is seen, one changed between two steps
of the same generation is not.
:func:`fused_decode_status` says whether a model's steps take it, and why not.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor, nn

from glassformer.kernels.decode import ACTIVATIONS, NORMS, BlockArgs, QLinearArgs, StackShape, decode_step
from glassformer.nn.attention import MultiHeadAttention
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.cache import KVCache, StaticCache
from glassformer.nn.norms import LayerNorm, RMSNorm
from glassformer.quant.linear import Int8Linear, KernelArgs, QuantLinear

LINEARS = (("attn", "q_proj", "q"), ("attn", "k_proj", "k"), ("attn", "v_proj", "v"), ("attn", "o_proj", "o"),
           ("ffn", "gate", "gate"), ("ffn", "up", "up"), ("ffn", "down", "down"))  # fmt: skip


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _linear_args(args: KernelArgs, layer: QuantLinear) -> QLinearArgs:
    kind, weight, scale, rowsum, code, bias = args
    return QLinearArgs(kind, layer.in_features, layer.out_features, weight.data_ptr(), scale.data_ptr(),
                       _ptr(rowsum), _ptr(code), _ptr(bias))  # fmt: skip


def _norm_kind(norm: nn.Module) -> str | None:
    return {RMSNorm: "rmsnorm", LayerNorm: "layernorm"}.get(type(norm))


def _activation(ffn: nn.Module) -> str | None:
    """The feed-forward's activation as decode.c names it, or None for one it does not have."""
    act = ffn.act
    if type(act) is nn.GELU:
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    return {nn.SiLU: "silu", nn.ReLU: "relu"}.get(type(act))


class _Plan:
    """The C structures of one stack as its layers are now, and what would make them stale."""

    def __init__(self, stack: TransformerStack) -> None:
        self.watch: list[tuple[nn.Module | dict, str, object]] = []  # (owner or table, name, what it held)
        self.versions: list[tuple[Tensor, int]] = []  # tensors read, with their version counters
        self.keep: list[object] = []  # tensors the structures point into
        self.cache_ptr: int | None = None
        self.reason = self._build(stack)

    def _see(self, owner: nn.Module, name: str) -> object:
        value = getattr(owner, name)
        self.watch.append((owner, name, value))
        return value

    def _build(self, stack: TransformerStack) -> str | None:
        """Fill the structures; the reason the stack cannot take the fused step, or None."""
        blocks = list(stack.layers)
        first = blocks[0]
        kind = _norm_kind(first.attn_norm)
        if kind is None:
            return f"block 0: its norm is {type(first.attn_norm).__name__}; the fused step does RMSNorm and LayerNorm"
        act = _activation(first.ffn)
        if act is None:
            return f"block 0: the activation {type(first.ffn.act).__name__} is not one the fused step has"
        attn: MultiHeadAttention = first.attn
        self.array = (BlockArgs * len(blocks))()
        for i, block in enumerate(blocks):
            why = self._block(block, self.array[i], first)
            if why is not None:
                return f"block {i}: {why}"
        eps = first.attn_norm.eps
        scale = attn.scale if attn.scale is not None else 1.0 / math.sqrt(attn.head_dim)
        self.shape = StackShape(len(blocks), attn.dim, attn.n_heads, attn.n_kv_heads, attn.head_dim,
                                first.ffn.down.in_features, 0, NORMS[kind], ACTIVATIONS[act],
                                first.ffn.gate is not None, eps, scale)  # fmt: skip
        final = self._see(stack, "final_norm")
        if final is not None:
            if _norm_kind(final) != kind or final.eps != eps:
                return f"the final norm ({type(final).__name__}, eps {final.eps}) differs from the blocks'"
            self._tensors(final)
            try:
                self.shape.final_norm, self.shape.final_norm_bias = self._norm(final)
            except TypeError as exc:
                return f"the final norm: {exc}"
        return None

    def _tensors(self, module: nn.Module) -> None:
        """Watch a module's own parameters and buffers: the same objects, unchanged in place."""
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                self.watch.append((table, name, t))
                if t is not None:
                    self.versions.append((t, t._version))

    @staticmethod
    def _norm(module: nn.Module) -> tuple[int, int | None]:
        """Pointers to a norm's weight and bias (None: no bias), float32 contiguous CPU tensors."""
        out = []
        for t in (module.weight, getattr(module, "bias", None)):
            if t is not None and (t.dtype != torch.float32 or not t.is_contiguous() or not t.is_cpu):
                raise TypeError(f"weights of {t.dtype} on {t.device}; the fused step reads float32 on the CPU")
            out.append(_ptr(t))
        return out[0], out[1]

    def _block(self, block: nn.Module, out: BlockArgs, first: nn.Module) -> str | None:
        attn, ffn = self._see(block, "attn"), self._see(block, "ffn")
        norms = (self._see(block, "attn_norm"), self._see(block, "ffn_norm"))
        if block.norm_position != "pre" or block.cross_attn is not None:
            return "only pre-norm self-attention blocks take the fused step"
        if any(type(n) is not type(first.attn_norm) or n.eps != first.attn_norm.eps for n in norms):
            return "its norms differ from block 0's"
        if type(attn) is not MultiHeadAttention or attn.head_dim % 2:
            return f"attention {type(attn).__name__} with head_dim {attn.head_dim}: needs MultiHeadAttention, even head_dim"
        shape = (attn.dim, attn.n_heads, attn.n_kv_heads, attn.head_dim, attn.scale)
        ref = first.attn
        if shape != (ref.dim, ref.n_heads, ref.n_kv_heads, ref.head_dim, ref.scale):
            return "its attention differs in size from block 0's"
        if _activation(ffn) != _activation(first.ffn) or (ffn.gate is None) != (first.ffn.gate is None):
            return "its feed-forward differs from block 0's"
        for norm in norms:
            self._tensors(norm)
        try:
            (out.attn_norm, out.attn_norm_bias), (out.ffn_norm, out.ffn_norm_bias) = map(self._norm, norms)
        except TypeError as exc:
            return f"norms: {exc}"
        for owner_name, name, field in LINEARS:
            owner = attn if owner_name == "attn" else ffn
            layer = self._see(owner, name)
            if layer is None:  # an ungated feed-forward has no gate
                continue
            if not isinstance(layer, QuantLinear):
                return f"{owner_name}.{name} is {type(layer).__name__}, not a quantized layer"
            if isinstance(layer, Int8Linear) and layer.threshold is not None:
                return f"{owner_name}.{name} uses LLM.int8() outliers, which run in PyTorch"
            args = layer.kernel_args()
            if args is None:
                return f"{owner_name}.{name} decodes with PyTorch ({layer.decode_path})"
            self._tensors(layer)
            self.keep.append(args)
            setattr(out, field, _linear_args(args, layer))
        if ffn.down.in_features != first.ffn.down.in_features or ffn.down.out_features != attn.dim:
            return "its feed-forward differs in size from block 0's"
        return None

    def fresh(self) -> bool:
        """Whether every layer, buffer and weight read is still the one the structures point at."""
        return all((o.get(n) if isinstance(o, dict) else getattr(o, n)) is v for o, n, v in self.watch) and all(
            t._version == v for t, v in self.versions
        )

    def point_at(self, cache: StaticCache) -> None:
        """Each block's key/value pointers into the cache's ``(L, 1, Hkv, max_len, hd)`` buffers."""
        self.cache_ptr = (cache.k.data_ptr(), cache.v.data_ptr(), cache.max_len)
        step = cache.k.stride(0) * cache.k.element_size()
        for i, b in enumerate(self.array):
            b.k_cache = cache.k.data_ptr() + i * step
            b.v_cache = cache.v.data_ptr() + i * step
        self.shape.max_len = cache.max_len


class FusedDecode:
    """``TransformerStack.decode_hook`` for quantized Llama-style stacks (see the module docstring)."""

    def __init__(self, stack: TransformerStack) -> None:
        self.stack = stack
        self._plan: _Plan | None = None
        self._checked: weakref.ref | None = None  # the cache the plan was last found fresh for

    def __getstate__(self) -> dict:  # copies (deepcopy, pickle) rebuild their C structures
        return {"stack": self.stack, "_plan": None, "_checked": None}

    def plan(self) -> _Plan:
        """The structures of the stack as it is now (rebuilt when a layer or buffer changed)."""
        if self._plan is None or not self._plan.fresh():
            self._plan = _Plan(self.stack)
        return self._plan

    def reason(self) -> str | None:
        """Why the stack's steps do not take the fused path as it is now (None: they do)."""
        if self.stack.training:
            return "the model is in training mode (model.eval() turns the fused step on)"
        return self.plan().reason

    def __call__(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: KVCache) -> Tensor | None:
        if self.stack.training or not isinstance(cache, StaticCache) or x.device.type != "cpu":
            return None
        if self._checked is None or self._checked() is not cache:  # a new generation: look at the layers again
            self.plan()
            self._checked = weakref.ref(cache)
        k, plan = cache.k, self._plan
        pos = cache.lengths[0]
        if (
            plan.reason is not None or k.dtype != torch.float32 or k.shape[1] != 1 or pos >= cache.max_len
            or cache.lengths.count(pos) != len(cache.lengths) or len(cache.lengths) != plan.shape.n_layers
            or k.shape[2] != plan.shape.n_kv_heads or k.shape[4] != plan.shape.head_dim or not k.is_contiguous()
            or not cache.v.is_contiguous()
        ):  # fmt: skip
            return None
        if rope is not None:
            rope = tuple(t.reshape(-1).contiguous() for t in rope)  # (hd,) cos and sin
            if rope[0].numel() != plan.shape.head_dim or rope[0].dtype != torch.float32:
                return None
        if plan.cache_ptr != (k.data_ptr(), cache.v.data_ptr(), cache.max_len):
            plan.point_at(cache)
        h = x.reshape(-1).to(torch.float32, copy=True)  # (C,), overwritten with the stack's output
        decode_step(plan.array, plan.shape, h, rope, pos)
        cache.lengths[:] = [pos + 1] * len(cache.lengths)
        return h.view(1, 1, -1).to(x.dtype)


def enable_fused_decode(model: nn.Module) -> None:
    """Give every ``TransformerStack`` in ``model`` the fused step (it checks itself at each call)."""
    for module in model.modules():
        if isinstance(module, TransformerStack) and module.decode_hook is None:
            module.decode_hook = FusedDecode(module)


def fused_decode_status(model: nn.Module) -> str | None:
    """None when a batch-1 decoding step of ``model`` runs as one C call, else why it does not."""
    stacks = [m for m in model.modules() if isinstance(m, TransformerStack)]
    if not stacks:
        return f"{type(model).__name__} has no TransformerStack"
    hooks = [s.decode_hook for s in stacks]
    if not all(isinstance(h, FusedDecode) for h in hooks):
        return "the fused step is not enabled (glassformer.quant.decode.enable_fused_decode)"
    reasons = [h.reason() for h in hooks]
    return next((r for r in reasons if r is not None), None)
