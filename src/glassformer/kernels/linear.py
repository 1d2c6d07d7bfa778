"""Linear layers that decode faster on a CPU: packed weights and a matrix-vector kernel in C.

A decoding step multiplies each weight matrix by one row (or a few: a batch, beams, guessed
tokens), so it is bound by how fast the matrix streams from memory, not by arithmetic. PyTorch
hands that to MKL, which on the CPUs measured here streams 13-21 GB/s out of the 25 GB/s a plain
read reaches on one core (and barely more on two). ``linear.c`` reaches the read speed on one core
and scales across cores, using a copy of the weight packed into 32-row tiles
(:func:`pack_weight`). ``bench/gpt_generate.py`` measures what it does for a whole model.

:class:`FastLinear` is ``nn.Linear`` plus that path: same parameters, same state dict, same
gradients. It takes the kernel only when nothing needs autograd, on a CPU, in float32, for at
most ``MAX_ROWS`` rows; everything else (training, a long prompt, CUDA) goes to ``F.linear``.
The packed copy costs the weight's memory once more; it is made on first use and made again
when the weight changes (an optimizer step, a load), so it never goes stale.
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.kernels.build import load

TILE = 32  # output rows per packed tile; must match TILE in linear.c
MAX_ROWS = 16  # above this many rows MKL's matrix-matrix product is faster (bench/gpt_generate.py)


def available() -> bool:
    """True when the compiled kernel is loaded (see ``build.unavailable_reason`` when not)."""
    return load() is not None


def memory_available() -> int | None:
    """Bytes the OS could still hand out (Linux ``MemAvailable``), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def room_for(nbytes: int) -> bool:
    """Whether a packed copy of ``nbytes`` leaves at least half of the free memory free. When it
    does not, decoding keeps PyTorch's products instead of pushing the machine into swap."""
    free = memory_available()
    if free is None or nbytes <= free // 2:
        return True
    global _warned_memory
    if not _warned_memory:
        _warned_memory = True
        warnings.warn(
            f"glassformer.kernels: not packing {nbytes / 2**20:.0f} MB of weights with only {free / 2**20:.0f} MB "
            "of memory free; decoding uses PyTorch's matrix products (slower, same results). Free memory, or "
            "set GLASSFORMER_KERNELS=0 to silence this.",
            stacklevel=3,
        )
    return False


_warned_memory = False  # the warning above is given once per process


def huge_page_empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised CPU tensor backed by 2 MiB pages where the OS allows it (Linux, THP in
    ``madvise`` or ``always`` mode): fewer TLB misses when a kernel streams it."""
    out = torch.empty(shape, dtype=dtype)
    lib = load()
    if lib is not None:
        lib.gf_advise_huge(out.data_ptr(), out.numel() * out.element_size())  # a hint; failure is harmless
    return out


def packed_numel(out_features: int, in_features: int) -> int:
    """Elements of ``pack_weight``'s result: the output rows rounded up to whole tiles."""
    return -(-out_features // TILE) * TILE * in_features


def pack_weight(weight: Tensor, dtype: torch.dtype = torch.float32, out: Tensor | None = None) -> Tensor:
    """``(O, I)`` -> ``(ceil(O / 32), I, 32)``: 32 output rows interleaved per input feature, so a
    tile streams as one contiguous block; missing rows of the last tile are zeros. ``out``: a
    flat buffer of ``packed_numel(O, I)`` elements to fill (a slice of a shared arena)."""
    if weight.dim() != 2:
        raise ValueError(f"pack_weight expects a 2-D (out_features, in_features) weight, got {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    tiles = -(-out_features // TILE)
    w = weight.detach().to(dtype).contiguous()
    if tiles * TILE != out_features:
        w = torch.cat([w, w.new_zeros(tiles * TILE - out_features, in_features)])
    if out is None:
        packed = huge_page_empty((tiles, in_features, TILE), dtype)
    else:
        packed = out.view(tiles, in_features, TILE)
    packed.copy_(w.view(tiles, TILE, in_features).transpose(1, 2))
    return packed


def packed_linear(x: Tensor, packed: Tensor, bias: Tensor | None, out_features: int) -> Tensor:
    """``x @ W.T + bias`` from ``packed = pack_weight(W)``; x is ``(..., in_features)`` float32 on a CPU."""
    lib = load()
    if lib is None:
        raise RuntimeError("the glassformer C kernels are not available; use F.linear")
    tiles, in_features, tile = packed.shape
    if tile != TILE or not (tiles - 1) * TILE < out_features <= tiles * TILE:
        raise ValueError(f"packed weight of shape {tuple(packed.shape)} does not hold {out_features} outputs")
    if x.shape[-1] != in_features:
        raise ValueError(f"input has {x.shape[-1]} features; the weight expects {in_features}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"packed_linear takes float32 CPU input, got {x.dtype} on {x.device}")
    bias_ptr = None
    if bias is not None:
        bias = bias.detach().to(torch.float32).contiguous()
        bias_ptr = bias.data_ptr()
    return _run_kernel(lib, x, packed.data_ptr(), bias_ptr, in_features, out_features)


def _run_kernel(
    lib: ctypes.CDLL, x: Tensor, packed_ptr: int, bias_ptr: int | None, in_features: int, out_features: int
) -> Tensor:
    """The call itself, shared by :func:`packed_linear` and :class:`FastLinear` (which checks the
    arguments once, when it packs, not on every call)."""
    rows = x.reshape(-1, in_features)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    y = torch.empty(rows.shape[0], out_features, dtype=torch.float32)
    lib.gf_linear(
        rows.data_ptr(), rows.stride(0), packed_ptr, bias_ptr, y.data_ptr(), rows.shape[0], in_features, out_features
    )
    return y.view(*x.shape[:-1], out_features)


class FastLinear(nn.Linear):
    """``nn.Linear`` that uses the packed kernel for small inference batches on a CPU.

    The forward pass is written for a few microseconds of overhead: a decoding step of a
    30-layer model calls it over 200 times.
    """

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if (
            x.is_cpu
            and x.dtype == torch.float32
            and x.dim() > 0
            and x.shape[-1] == self.in_features
            and (b is None or b.is_contiguous())
            and 0 < x.numel() <= MAX_ROWS * self.in_features
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and (lib := load()) is not None
        ):
            packed = self.__dict__.get("_packed")
            if packed is None or packed[0] != w._version or packed[1] != w.data_ptr():
                packed = self._pack()
            if packed[2] is not None:
                bias_ptr = None if b is None else b.data_ptr()
                return _run_kernel(lib, x, packed[2], bias_ptr, self.in_features, self.out_features)
        return F.linear(x, self.weight, self.bias)

    def packed_weight(self) -> Tensor | None:
        """The packed copy of the weight (None for a weight the kernel cannot take), redone when
        the weight changed since it was made: an optimizer step, a load, a ``.to()``."""
        packed = self.__dict__.get("_packed")
        w = self.weight
        if packed is None or packed[0] != w._version or packed[1] != w.data_ptr():
            packed = self._pack()
        return packed[4]

    def _usable(self) -> bool:
        w, b = self.weight, self.bias
        return w.is_cpu and w.dtype == torch.float32 and (b is None or (b.is_cpu and b.dtype == torch.float32))

    def _pack(self, out: Tensor | None = None) -> tuple:
        """Cache ``(version, data_ptr, packed_ptr, usable, packed)``: the forward pass checks two
        integers and passes a pointer, which keeps its overhead near that of ``nn.Linear``."""
        w, b = self.weight, self.bias
        usable = self._usable() and (out is not None or room_for(4 * packed_numel(self.out_features, self.in_features)))
        packed = None
        if usable:
            with torch.no_grad():
                packed = pack_weight(w, out=out)
                if b is not None and not b.is_contiguous():
                    b.data = b.data.contiguous()
        entry = (
            w._version, w.data_ptr(),
            None if packed is None else packed.data_ptr(),
            usable,
            packed,
        )  # fmt: skip
        self.__dict__["_packed"] = entry  # not a buffer: stays out of state_dict and .to()
        return entry


def use_fast_linear(model: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` into a :class:`FastLinear` in place.

    Only the class changes (parameters, hooks and the state dict stay as they are), so tied
    weights stay tied. Returns how many layers changed; 0 when the kernel is unavailable.
    """
    if not available():
        return 0
    changed = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FastLinear
            changed += 1
    if changed:
        _pack_small_layers(model)
    return changed


ARENA_LIMIT = 8 * 2**20  # weights with fewer elements (32 MB) share one buffer of 2 MiB pages


def _pack_small_layers(model: nn.Module) -> None:
    """Pack the small layers' weights now, side by side in one buffer backed by 2 MiB pages.

    Packed separately, a 2.4 MB matrix (GPT-2's attention projections) mostly misses the huge
    pages, which only cover whole aligned 2 MiB blocks inside an allocation; streamed through
    4 KiB pages it reads ~10% slower. Big layers (an output head) get their own buffer on first
    use, so a model that never decodes with them does not pay for their copy.
    """
    layers = [
        m for m in model.modules()
        if type(m) is FastLinear and m._usable() and m.weight.numel() < ARENA_LIMIT and "_packed" not in m.__dict__
    ]  # fmt: skip
    if not layers:
        return
    sizes = [packed_numel(m.out_features, m.in_features) for m in layers]
    if not room_for(4 * sum(sizes)):
        return  # each layer tries again alone on first use, and gives up the same way if memory is short
    arena = huge_page_empty((sum(sizes),), torch.float32)
    start = 0
    for layer, size in zip(layers, sizes, strict=True):
        layer._pack(out=arena[start : start + size])
        start += size


def use_torch_linear(model: nn.Module) -> int:
    """Undo :func:`use_fast_linear`: back to ``nn.Linear`` (and drop the packed copies)."""
    changed = 0
    for module in model.modules():
        if type(module) is FastLinear:
            module.__dict__.pop("_packed", None)
            module.__class__ = nn.Linear
            changed += 1
    return changed
