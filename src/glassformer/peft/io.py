"""LoRA adapters on disk in peft's format, so they travel between glassformer and Hugging Face ``peft``.

A folder holds ``adapter_config.json`` (peft's ``LoraConfig`` fields) and
``adapter_model.safetensors`` with keys ``base_model.model.<HF module>.lora_A.weight`` /
``.lora_B.weight`` and, for each saved module, ``base_model.model.<HF module>.<param>``. Module
names are the Hugging Face ones: each family's ``hf.py`` says how ours translate
(``hf_tensor_names``), found through the family's Hugging Face ``Format``, so this module knows no
family. A family without that map, or an adapter on a layer with no one-to-one Hugging Face
tensor (GPT-2's fused q/k/v), is saved under our own names: glassformer reads it, peft cannot.

peft's config has no field for which base an adapter belongs to beyond
``base_model_name_or_path``, and unknown fields make it warn, so the base's family and config
fingerprint go in a sidecar, ``glassformer_adapter.json``, which peft ignores. Loading refuses an
adapter whose fingerprint (or, for peft's own files, base name) is another model's, naming both.
The sidecar also says whether the adapter was trained on a 4-bit base (QLoRA): loading it onto
the float base quantizes that base the same way again (the rounding is deterministic), so the
reloaded model computes what the trained one did.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from glassformer.peft.lora import LoraConfig, LoraError, LoraLinear, inject_lora, lora_layers, lora_state_dict
from glassformer.peft.quantized import is_quantized_layer
from glassformer.registry import family as family_record
from glassformer.utils.weights import read_safetensors, write_json, write_safetensors

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SIDECAR = "glassformer_adapter.json"
PREFIX = "base_model.model."
# Config fields that change how a model trains or runs, not which weights fit it.
RUNTIME_FIELDS = ("dropout", "attn_backend", "init_std")
# peft features an adapter may use that these LoRA layers do not compute: (field, value meaning "off").
UNSUPPORTED = (("use_dora", False), ("bias", "none"), ("lora_bias", False), ("fan_in_fan_out", False),
               ("rank_pattern", {}), ("alpha_pattern", {}), ("layers_to_transform", None))  # fmt: skip


def base_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's config (runtime-only fields left out): which base an adapter fits."""
    config = getattr(model, "config", None)
    data = config.to_dict() if hasattr(config, "to_dict") else {}
    kept = {k: v for k, v in data.items() if not any(r in k for r in RUNTIME_FIELDS)}
    text = json.dumps({"class": type(model).__name__, **kept}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _names_function(model: nn.Module) -> Any:
    """The family's ``hf_tensor_names`` (from the module of its Hugging Face loader), or None."""
    name = getattr(model, "family", "")
    if not name:
        return None
    fmt = family_record(name).format("huggingface")
    if fmt is None:
        return None
    module = fmt.load.partition(":")[0] if isinstance(fmt.load, str) else fmt.load.__module__
    return getattr(importlib.import_module(module), "hf_tensor_names", None)


def tensor_names(model: nn.Module) -> dict[str, str]:
    """Our tensor name -> the Hugging Face one (identity, with a warning, where the family has no map)."""
    names = _names_function(model)
    if names is not None:
        try:
            return names(model)
        except ValueError as err:  # a config with no Hugging Face equivalent
            warnings.warn(f"adapter keys stay in glassformer's names: {err}", stacklevel=3)
    return {}


def _adapter_names(model: nn.Module) -> dict[str, str]:
    """The names to save under: the Hugging Face ones when every adapter tensor has one, else ours
    (all of them, with a warning: e.g. GPT-2 fuses q/k/v into one ``c_attn``, which peft would adapt
    as a whole, so our separate ``q_proj`` adapter has no place there; glassformer still reads it)."""
    names = tensor_names(model)
    wanted = [f"{n}.weight" for n, _ in lora_layers(model)]
    wanted += [k for k in lora_state_dict(model) if ".lora_" not in k]
    unplaced = [k for k in wanted if k not in names]
    if names and unplaced:
        warnings.warn(
            f"{unplaced[0].removesuffix('.weight')} has no one-to-one Hugging Face tensor, so the adapter "
            "is saved under glassformer's names: glassformer loads it, peft cannot place it",
            stacklevel=3,
        )
        return {}
    return names


def _hf_module(names: dict[str, str], ours: str) -> str:
    return names[f"{ours}.weight"].removesuffix(".weight") if names else ours


def _adapter_tensors(model: nn.Module, names: dict[str, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, tensor in lora_state_dict(model).items():
        module, sep, tail = key.rpartition(".lora_")
        hf = f"{_hf_module(names, module)}.lora_{tail}" if sep else names.get(key, key)
        out[PREFIX + hf] = tensor
    return out


def _peft_config(model: nn.Module, names: dict[str, str], base_name: str | None) -> dict[str, Any]:
    config: LoraConfig = model.lora_config
    targets = sorted(_hf_module(names, n) for n, _ in lora_layers(model))
    saved = [_hf_module(names, n) for n in getattr(model, "lora_saved_modules", ())]
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_name, "revision": None,
        "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
        "use_rslora": config.use_rslora, "target_modules": targets, "modules_to_save": saved or None,
        "init_lora_weights": True if config.init == "kaiming" else "gaussian",
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
    }  # fmt: skip


def save_adapter(
    model: nn.Module, directory: str | os.PathLike[str], *, base_name: str | None = None
) -> Path:
    """Write the adapter (LoRA matrices + saved modules) in peft's format; ``base_name`` is the base's
    hub id or folder, recorded as peft's ``base_model_name_or_path``. Returns the folder."""
    if not any(True for _ in lora_layers(model)) or not hasattr(model, "lora_config"):
        raise LoraError("this model has no LoRA adapters to save; inject_lora(model, config) first")
    directory = Path(directory)
    names = _adapter_names(model)
    write_safetensors(_adapter_tensors(model, names), directory / ADAPTER_WEIGHTS)
    write_json(_peft_config(model, names, base_name), directory / ADAPTER_CONFIG)
    sidecar = {"family": getattr(model, "family", ""), "model_class": type(model).__name__,
               "base_name": base_name, "base_fingerprint": base_fingerprint(model),
               "names": "huggingface" if names else "glassformer",
               "base_quantization": model.lora_config.quantize}  # fmt: skip
    write_json(sidecar, directory / SIDECAR)
    return directory


# ---------------------------------------------------------------------------------------------
# loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LoraError(f"{path}: not valid JSON ({err})") from None


def _check_base(folder: Path, adapter: dict[str, Any], model: nn.Module, base_name: str | None) -> None:
    """Refuse an adapter made for another base, naming both."""
    sidecar_path = folder / SIDECAR
    theirs = adapter.get("base_model_name_or_path")
    if sidecar_path.is_file():
        side = _read_json(sidecar_path)
        mine = base_fingerprint(model)
        if side.get("base_fingerprint") != mine:
            raise LoraError(
                f"{folder}: this adapter was trained on {side.get('base_name') or 'an unnamed base'} "
                f"({side.get('family')} {side.get('model_class')}, config {side.get('base_fingerprint')}), "
                f"not on this model ({base_name or 'unnamed'}: {getattr(model, 'family', '?')} "
                f"{type(model).__name__}, config {mine}); load it onto the base it was trained on"
            )
    elif base_name and theirs and Path(str(theirs)).name.lower() != Path(base_name).name.lower():
        raise LoraError(
            f"{folder}: this adapter was trained on {theirs!r}, not on {base_name!r}; "
            "load it onto the base it was trained on (or pass base_name=None to skip the check)"
        )


def _check_supported(folder: Path, adapter: dict[str, Any]) -> None:
    if adapter.get("peft_type", "LORA") != "LORA":
        raise LoraError(f"{folder}: a {adapter['peft_type']} adapter; glassformer reads LoRA adapters only")
    for field, off in UNSUPPORTED:
        value = adapter.get(field, off)
        if value is not None and value != off:
            raise LoraError(
                f"{folder}: {ADAPTER_CONFIG} sets {field}={adapter[field]!r}, which glassformer's LoRA does not compute"
            )


def _group(folder: Path, tensors: dict[str, Tensor], hf_to_ours: dict[str, str]) -> tuple[dict, dict]:
    """Split the file into ``{our layer: {"A": t, "B": t}}`` and ``{our param: t}`` (saved modules)."""
    layers: dict[str, dict[str, Tensor]] = {}
    saved: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, tensor in tensors.items():
        hf = key.removeprefix(PREFIX)
        module, _, tail = hf.rpartition(".lora_")
        if tail in ("A.weight", "B.weight"):
            ours = hf_to_ours.get(f"{module}.weight", module if not hf_to_ours else None)
            if ours is None:
                unknown.append(key)
            else:
                layers.setdefault(ours.removesuffix(".weight"), {})[tail[0]] = tensor
        elif hf_to_ours and hf not in hf_to_ours:
            unknown.append(key)
        else:
            saved[hf_to_ours.get(hf, hf)] = tensor
    if unknown:
        raise LoraError(f"{folder}: adapter tensors that fit no layer of this model: {unknown[:5]}")
    return layers, saved


def _fill(folder: Path, model: nn.Module, layers: dict[str, dict[str, Tensor]]) -> None:
    for name, pair in layers.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, LoraLinear)
        for part, param in (("A", layer.lora_A.weight), ("B", layer.lora_B.weight)):
            if part not in pair:
                raise LoraError(f"{folder}: {name} has no lora_{part} tensor")
            if pair[part].shape != param.shape:
                raise LoraError(
                    f"{folder}: {name}.lora_{part} has shape {tuple(pair[part].shape)}, the layer needs "
                    f"{tuple(param.shape)}; the adapter is for another base model"
                )
            param.data.copy_(pair[part].to(param.dtype))


def _fill_saved(folder: Path, model: nn.Module, saved: dict[str, Tensor]) -> None:
    params = dict(model.named_parameters())
    for name, tensor in saved.items():
        if name not in params or params[name].shape != tensor.shape:
            found = tuple(params[name].shape) if name in params else "no such parameter"
            raise LoraError(
                f"{folder}: saved module tensor {name} {tuple(tensor.shape)} does not fit ({found})"
            )
        params[name].data.copy_(tensor.to(params[name].dtype))


def _requantize(model: nn.Module, trained_on: str | None) -> str | None:
    """The 4-bit format to store a float base in so a QLoRA adapter sees the weights it trained on
    (None when it trained on a float base, or this base is quantized already)."""
    already = any(is_quantized_layer(m) for m in model.modules())
    return None if already else trained_on


def load_adapter(
    model: nn.Module, directory: str | os.PathLike[str], *, base_name: str | None = None
) -> nn.Module:
    """Inject and fill the adapter in ``directory`` (ours or peft's) into a model without one; returns it.

    The adapter's layers and saved modules become trainable, as after :func:`inject_lora`, so
    training can go on. A QLoRA adapter stores a float base in 4 bits first (see the module note). ``base_name`` (the base's hub id or folder) is checked against a peft
    adapter's ``base_model_name_or_path``; ours are checked by config fingerprint.
    """
    folder = Path(directory)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise LoraError(
                f"{folder}: no {name}; an adapter folder holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
            )
    adapter = _read_json(folder / ADAPTER_CONFIG)
    _check_supported(folder, adapter)
    _check_base(folder, adapter, model, base_name)
    side = _read_json(folder / SIDECAR) if (folder / SIDECAR).is_file() else {}
    ours_named = side.get("names") == "glassformer"
    hf_to_ours = {} if ours_named else {hf: ours for ours, hf in tensor_names(model).items()}
    layers, saved = _group(folder, read_safetensors(folder / ADAPTER_WEIGHTS), hf_to_ours)
    if not layers:
        raise LoraError(f"{folder}: {ADAPTER_WEIGHTS} holds no lora_A/lora_B tensors")
    ranks = {pair["A"].shape[0] for pair in layers.values() if "A" in pair}
    if len(ranks) != 1:
        raise LoraError(
            f"{folder}: layers of different ranks {sorted(ranks)}; one rank per adapter is supported"
        )
    saved_modules = tuple(sorted({n.rpartition(".")[0] for n in saved}))
    init = "gaussian" if adapter.get("init_lora_weights") == "gaussian" else "kaiming"
    config = LoraConfig(
        r=ranks.pop(), alpha=float(adapter.get("lora_alpha", 8)), dropout=float(adapter.get("lora_dropout", 0.0)),
        target=tuple(sorted(layers)), use_rslora=bool(adapter.get("use_rslora", False)),
        modules_to_save=saved_modules, init=init, quantize=_requantize(model, side.get("base_quantization")),
    )  # fmt: skip
    inject_lora(model, config)
    _fill(folder, model, layers)
    _fill_saved(folder, model, saved)
    return model
