"""Quantized checkpoints: a glassformer folder whose ``config.json`` has a ``quantization`` section.

The folder is the family's own (``config.json`` with ``family`` and the config fields, plus
``model.safetensors``) with one more key, ``"quantization": {"format", "skip", "threshold",
"layers", "rest_dtype"}``. The safetensors file holds each quantized layer's packed buffers under
its own name (``blocks.0.attn.qkv.packed``, ``...absmax_q``; ``...qweight``, ``...scale``: see
:mod:`glassformer.quant.nf4` and :mod:`glassformer.quant.int8` for the layouts) and every other
tensor as usual, optionally stored as float16/bfloat16 (``rest_dtype``) and widened to float32
on loading. ``glassformer.models.load_model`` opens such a folder (it hands it to
:func:`open_quantized`), so ``generate``/``chat``/``classify`` read it like any other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glassformer import registry
from glassformer.quant.decode import enable_fused_decode
from glassformer.quant.linear import Int8Linear, NF4Linear, QuantLinear
from glassformer.quant.model import quantization_of, swap_linears
from glassformer.utils.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    FolderConfig,
    load_into,
    model_state,
    read_config,
    read_safetensors,
    write_json,
    write_safetensors,
)

REST_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_PACKED = ("qweight", "scale", "packed", "absmax_q", "absmax_scale", "absmax_offset")


def _stored_state(model: nn.Module, rest: torch.dtype) -> dict[str, Tensor]:
    """The state to write: packed buffers as they are, other float tensors cast to ``rest``."""
    state = model_state(model)
    return {k: v if k.rsplit(".", 1)[-1] in _PACKED or not v.is_floating_point() else v.to(rest)
            for k, v in state.items()}  # fmt: skip


def save_quantized(model: nn.Module, directory: str | os.PathLike[str], rest_dtype: str = "float32") -> Path:
    """Write a quantized model (from ``quantize_model``) as a folder ``load_model`` opens.

    ``rest_dtype``: how the tensors that are not quantized (embeddings, norms, biases, skipped
    layers) are stored on disk: ``float32``, ``float16`` or ``bfloat16``.
    """
    info = quantization_of(model)
    if info is None:
        raise ValueError(f"{type(model).__name__} is not quantized; call glassformer.quant.quantize_model first "
                         "(or save a float model with model.save)")  # fmt: skip
    if rest_dtype not in REST_DTYPES:
        raise ValueError(f"rest_dtype={rest_dtype!r}: choose one of {', '.join(REST_DTYPES)}")
    family, config = getattr(model, "family", ""), getattr(model, "config", None)
    if not family or config is None:
        raise TypeError(f"{type(model).__name__} is not a glassformer model (no family/config); "
                        "save_quantized writes glassformer folders")  # fmt: skip
    directory = Path(directory)
    write_safetensors(_stored_state(model, REST_DTYPES[rest_dtype]), directory / WEIGHTS_NAME)
    section = {**info, "rest_dtype": rest_dtype}
    write_json({"family": family, **config.to_dict(), "quantization": section}, directory / CONFIG_NAME)
    return directory


def _empty_layer(info: dict[str, Any], linear: nn.Linear) -> QuantLinear:
    """A quantized layer of ``linear``'s sizes, to be filled from the file."""
    bias = linear.bias is not None
    if info["format"] == "int8":
        return Int8Linear(linear.in_features, linear.out_features, bias, threshold=info.get("threshold"))
    return NF4Linear(linear.in_features, linear.out_features, bias, quant_type=info["format"])


def open_quantized(folder: FolderConfig, map_location: str = "cpu") -> nn.Module:
    """The model of a quantized folder whose ``config.json`` has been read."""
    data = dict(folder.data)
    info = data.pop("quantization")
    if not isinstance(info, dict) or info.get("format") not in ("int8", "nf4", "fp4") or "layers" not in info:
        raise ValueError(f"{folder.folder / CONFIG_NAME}: the quantization section {info!r} needs a format "
                         "(int8, nf4 or fp4) and its list of layers; write it with glassformer.quant.save_quantized")  # fmt: skip
    record = registry.family(str(data.pop("family")))
    config = record.config.from_dict(data, source=str(folder.folder / CONFIG_NAME))  # type: ignore[attr-defined]
    model = record.model(config)
    missing = [n for n in info["layers"] if not isinstance(model.get_submodule(n), nn.Linear)]
    if missing:
        raise ValueError(f"{folder.folder}: quantized layers {missing[:8]} are not nn.Linear in {record.name}'s model")
    swap_linears(model, info["layers"], lambda linear: _empty_layer(info, linear))
    state = read_safetensors(folder.folder / WEIGHTS_NAME, device=map_location)
    expected = model.state_dict()
    state = {k: v.to(expected[k].dtype) if k in expected and v.is_floating_point() else v for k, v in state.items()}
    load_into(model, state, source=str(folder.folder / WEIGHTS_NAME))
    model.quantization = {k: v for k, v in info.items() if k != "rest_dtype"}
    enable_fused_decode(model)
    return model


def load_quantized(directory: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
    """Open a folder written by :func:`save_quantized`."""
    folder = read_config(directory)
    if "quantization" not in folder.data:
        raise ValueError(f"{folder.folder / CONFIG_NAME} has no quantization section: it is a float checkpoint; "
                         "open it with glassformer.models.load_model")  # fmt: skip
    return open_quantized(folder, map_location=map_location)


def folder_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes on disk of a checkpoint folder's files."""
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())
