"""The Hugging Face layout for ViT, both ways: ``ViTModel`` and ``ViTForImageClassification``.

A Hugging Face ViT folder holds ``config.json`` (``model_type: "vit"``) and ``model.safetensors``
with keys like ``vit.encoder.layer.3.attention.attention.query.weight``; ``transformers`` 5 renames
them to ``vit.layers.3.attention.q_proj.weight`` in memory but still writes the older names, which
are what checkpoints on the hub carry, so those are the names written here (both are read). No
tensor is reshaped: the [CLS] token ``(1, 1, C)``, the position table ``(1, T, C)`` and the
``Conv2d`` patch projection have the same shapes on both sides. The classifier sits outside the
``vit.`` prefix; a head-less ``ViTModel`` has no prefix and carries a pooler (dense + tanh).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor

from glassformer.models.vit.config import ViTConfig
from glassformer.models.vit.model import ViT
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

# HF file key (without the "vit." prefix) -> our key; "{}" is the block number.
ENCODER_KEYS: dict[str, str] = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "positions",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": "pooler.weight",
    "pooler.dense.bias": "pooler.bias",
}
LAYER_KEYS: dict[str, str] = {
    "layernorm_before": "attn_norm",
    "attention.attention.query": "attn.q_proj",
    "attention.attention.key": "attn.k_proj",
    "attention.attention.value": "attn.v_proj",
    "attention.output.dense": "attn.o_proj",
    "layernorm_after": "ffn_norm",
    "intermediate.dense": "ffn.up",
    "output.dense": "ffn.down",
}
# transformers 5's in-memory names of the same tensors (a state_dict taken from a live model)
LAYER_KEYS_V5: dict[str, str] = {
    "attention.q_proj": "attn.q_proj", "attention.k_proj": "attn.k_proj", "attention.v_proj": "attn.v_proj",
    "attention.o_proj": "attn.o_proj", "mlp.fc1": "ffn.up", "mlp.fc2": "ffn.down",
    "layernorm_before": "attn_norm", "layernorm_after": "ffn_norm",
}  # fmt: skip
HEAD_KEYS: dict[str, str] = {"classifier.weight": "head.weight", "classifier.bias": "head.bias"}
ACTIVATIONS: dict[str, str] = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}


def _key_map(config: ViTConfig, prefix: str, layers: str, table: dict[str, str]) -> dict[str, str]:
    """HF key -> our key for every tensor of a model of this config."""
    out = {prefix + hf: ours for hf, ours in ENCODER_KEYS.items()}
    for i in range(config.n_layers):
        for hf, ours in table.items():
            for leaf in ("weight", "bias"):
                out[f"{prefix}{layers}.{i}.{hf}.{leaf}"] = f"blocks.{i}.{ours}.{leaf}"
    out.update(HEAD_KEYS)
    return out


def _square(value: Any, name: str) -> int:
    """HF allows ``[h, w]`` sizes; ours are square."""
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"config.json {name}={value}: only square images and patches are supported")
        value = value[0]
    return int(value)


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> ViTConfig:
    """Our config from a Hugging Face ``config.json`` dict; ``overrides`` win (e.g. ``num_labels``)."""
    if hf.get("model_type", "vit") != "vit":
        raise ValueError(f"config.json has model_type={hf.get('model_type')!r}; the vit family reads 'vit'")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    if not hf.get("qkv_bias", True):
        raise ValueError("qkv_bias=False is not supported: glassformer's ViT has biases on q, k and v")
    arch = (hf.get("architectures") or ["ViTModel"])[0]
    head = arch != "ViTModel"
    id2label = hf.get("id2label") or {}
    names = tuple(id2label[k] for k in sorted(id2label, key=int)) if head else ()
    if names and all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        names = ()  # HF's placeholder names carry no information
    fields: dict[str, Any] = dict(
        image_size=_square(hf.get("image_size", 224), "image_size"),
        patch_size=_square(hf.get("patch_size", 16), "patch_size"), in_channels=hf.get("num_channels", 3),
        num_labels=(len(id2label) or hf.get("num_labels", 2)) if head else 0, label_names=names,
        dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"], n_heads=hf["num_attention_heads"],
        ffn_dim=hf["intermediate_size"], activation=ACTIVATIONS[act], norm_eps=hf.get("layer_norm_eps", 1e-12),
        dropout=hf.get("hidden_dropout_prob", 0.0), attn_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        pooler=not head, init_std=hf.get("initializer_range", 0.02),
    )  # fmt: skip
    fields.update(overrides)
    if fields["pooler"] and (hf.get("pooler_act", "tanh") != "tanh" or hf.get("pooler_output_size", fields["dim"]) != fields["dim"]):
        raise ValueError("only a tanh pooler of width hidden_size is supported (pooler_act, pooler_output_size)")  # fmt: skip
    return ViTConfig(**fields)


def architecture(config: ViTConfig) -> str:
    """The Hugging Face architecture a config is saved as (raises ``ValueError`` when none fits)."""
    if config.pooling != "cls":
        raise ValueError("pooling='mean' has no Hugging Face equivalent: ViTForImageClassification reads [CLS]")
    if config.pre_norm or not config.patch_bias or config.activation == "quick_gelu":
        raise ValueError(
            "a CLIP-style tower (pre_norm=True, patch_bias=False or quick_gelu) has no Hugging Face ViT "
            "equivalent: save it inside a CLIP model (glassformer.models.clip.hf)"
        )
    if config.num_labels == 0:
        if not config.pooler:
            raise ValueError(
                "a head-less ViT without a pooler has no Hugging Face equivalent: ViTModel carries one "
                "(build it with pooler=True)"
            )
        return "ViTModel"
    if config.pooler:
        raise ValueError("a pooler beside a classifier has no Hugging Face equivalent (ViTForImageClassification has none)")
    return "ViTForImageClassification"


def config_to_hf(config: ViTConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for our config."""
    arch = architecture(config)
    act = {v: k for k, v in ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[config.activation]
    out: dict[str, Any] = {
        "architectures": [arch], "model_type": "vit", "image_size": config.image_size,
        "patch_size": config.patch_size, "num_channels": config.in_channels, "hidden_size": config.dim,
        "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
        "intermediate_size": config.ffn_dim, "hidden_act": act, "layer_norm_eps": config.norm_eps,
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attn_dropout,
        "initializer_range": config.init_std, "qkv_bias": True, "pooler_act": "tanh",
        "pooler_output_size": config.dim, "encoder_stride": config.patch_size,
    }  # fmt: skip
    if config.num_labels:
        names = config.label_names or tuple(f"LABEL_{i}" for i in range(config.num_labels))
        out["id2label"] = {str(i): n for i, n in enumerate(names)}
        out["label2id"] = {n: i for i, n in enumerate(names)}
    return out


def state_dict_from_hf(state: dict[str, Tensor], config: ViTConfig) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an HF state dict (file or ``transformers`` 5 names, with or without ``vit.``) to ours.

    Returns ``(ours, unused_hf_keys)``."""
    table: dict[str, str] = {}
    for prefix in ("", "vit."):
        table.update(_key_map(config, prefix, "encoder.layer", LAYER_KEYS))
        table.update(_key_map(config, prefix, "layers", LAYER_KEYS_V5))
    ours: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        if key in table:
            ours[table[key]] = tensor
        else:
            unused.append(key)
    return ours, unused


def state_dict_to_hf(model: ViT) -> dict[str, Tensor]:
    """Our weights under the HF file names (``vit.`` prefix when the model has a classifier)."""
    prefix = "vit." if model.config.num_labels else ""
    inverse = {v: k for k, v in _key_map(model.config, prefix, "encoder.layer", LAYER_KEYS).items()}
    return {inverse[key]: t.detach().contiguous().cpu() for key, t in model.state_dict().items()}


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> ViT:
    """Load a Hugging Face ViT folder (or hub id in the local cache) into ``ViT``, strictly.

    ``overrides`` change config fields. Another ``num_labels`` (fine-tuning an ImageNet model on
    Fashion-MNIST) is the explicit opt-in for a freshly initialised head, named in a warning; any
    other missing, unexpected or mis-shaped weight is an error that names it."""
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    state = read_safetensors(folder)
    if "pooler" not in overrides:  # a ViTModel's pooler, unless saved without one or replaced by a new head
        has_pooler = any(k.endswith("pooler.dense.weight") for k in state)
        overrides = {**overrides, "pooler": has_pooler and overrides.get("num_labels", 0) == 0}
    new_head = "num_labels" in overrides
    if new_head and "label_names" not in overrides:
        overrides = {**overrides, "label_names": ()}  # the checkpoint's names belong to its own head
    config = config_from_hf(folder_config.data, **overrides)
    model = ViT(config)
    ours, unused_hf = state_dict_from_hf(state, config)
    if unused_hf:
        raise WeightsError(f"{folder}: checkpoint tensors the vit family does not know how to place: {unused_hf[:10]}")
    # with a new head, the checkpoint's head (and a pooler the model does not carry) stays behind
    expected = model.state_dict()
    left_out = [k for k in ours if new_head and (k.startswith("head.") or k not in expected)]
    report = load_into(model, {k: v for k, v in ours.items() if k not in left_out}, source=str(folder),
                       new=("head.*",) if new_head else ())  # fmt: skip
    if report.new or left_out:
        warnings.warn(f"{folder.name}: new head (not in the checkpoint): {report.new}; left out: {left_out}", stacklevel=2)
    return model


def save_pretrained(model: ViT, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the HF layout (``tokenizer`` is unused: images)."""
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model))
