"""Quantize a whole model: swap its ``nn.Linear`` layers for quantized ones, and count the bytes.

``quantize_model`` works on any family (it only looks for ``nn.Linear``); it records what it did
in ``model.quantization`` (format, options and the layers swapped), which ``save_quantized``
writes into ``config.json`` and ``load_quantized`` reads to rebuild the same structure. Both give
the model's stacks the fused decoding step of :mod:`glassformer.quant.decode`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, Literal

from torch import nn

from glassformer.quant.decode import enable_fused_decode
from glassformer.quant.linear import Int8Linear, NF4Linear, QuantLinear

Format = Literal["int8", "nf4", "fp4"]
FORMATS: tuple[str, ...] = ("int8", "nf4", "fp4")
DEFAULT_SKIP: tuple[str, ...] = ("lm_head",)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds any quantized layer (or was marked quantized)."""
    return getattr(model, "quantization", None) is not None or any(
        isinstance(m, QuantLinear) for m in model.modules()
    )


def _skipped(name: str, skip: Iterable[str]) -> bool:
    last = name.rsplit(".", 1)[-1]
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(last, p) for p in skip)


def _maker(to: str, threshold: float | None) -> Callable[[nn.Linear], QuantLinear]:
    if to == "int8":
        return lambda linear: Int8Linear.from_linear(linear, threshold=threshold)
    if to in ("nf4", "fp4"):
        if threshold is not None:
            raise ValueError(f"threshold (LLM.int8() outliers) goes with to='int8', not to={to!r}")
        return lambda linear: NF4Linear.from_linear(linear, quant_type=to)  # type: ignore[arg-type]
    raise ValueError(f"to={to!r}: choose one of {', '.join(FORMATS)}")


def swap_linears(model: nn.Module, names: Iterable[str], make: Callable[[nn.Linear], nn.Module]) -> None:
    """Replace each named ``nn.Linear`` submodule by ``make(linear)``, in place."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, make(getattr(parent, attr)))


def quantize_model(model: nn.Module, to: Format = "int8", skip: Iterable[str] = DEFAULT_SKIP,
                   threshold: float | None = None) -> nn.Module:  # fmt: skip
    """Swap every ``nn.Linear`` not matched by ``skip`` for an ``Int8Linear`` / ``NF4Linear``.

    ``skip``: glob patterns matched against each layer's full name and its last part (the
    default keeps ``lm_head``, often tied to the embedding, in float). ``threshold``: int8 only,
    LLM.int8()'s outlier threshold (6.0 in the paper); None is weight-only int8. The model is
    changed in place and returned. A model already quantized is refused: quantizing twice would
    compound the rounding errors, and the first format would be lost.
    """
    if is_quantized(model):
        found = getattr(model, "quantization", None) or {"format": "quantized layers"}
        raise ValueError(
            f"{type(model).__name__} is already quantized ({found.get('format')}); quantize the float "
            "model instead (load the original checkpoint again)"
        )
    make = _maker(to, threshold)
    skip = tuple(skip)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _skipped(n, skip)]
    if not names:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(f"no nn.Linear layer to quantize in {type(model).__name__}: skip={list(skip)} "
                         f"leaves none of {linears[:12]}")  # fmt: skip
    swap_linears(model, names, make)
    model.quantization = {"format": to, "skip": list(skip), "threshold": threshold, "layers": names}
    enable_fused_decode(model)
    return model


def quantization_of(model: nn.Module) -> dict[str, Any] | None:
    """What :func:`quantize_model` recorded on ``model`` (None for a float model)."""
    return getattr(model, "quantization", None)


def memory_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers in memory, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
    return total


def size_report(model: nn.Module) -> dict[str, int]:
    """Bytes in memory: all, the quantized layers' and the rest (embeddings, norms, float layers)."""
    quantized = sum(m.nbytes() for m in model.modules() if isinstance(m, QuantLinear))
    total = memory_bytes(model)
    return {"memory_bytes": total, "quantized_layer_bytes": quantized, "other_bytes": total - quantized}
