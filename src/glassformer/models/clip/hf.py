"""The Hugging Face layout for CLIP, both ways: ``CLIPModel`` (``model_type: "clip"``).

A ``CLIPModel`` folder holds ``config.json`` with a ``text_config`` and a ``vision_config`` and
``model.safetensors`` with keys under ``text_model.``, ``vision_model.``, the two projections and
``logit_scale``. Two tensors change shape, not content: HF's ``class_embedding`` ``(C,)`` is our
[CLS] token ``(1, 1, C)`` and its image ``position_embedding.weight`` ``(T, C)`` our table
``(1, T, C)``. HF's ``post_layernorm`` (on [CLS] only) is the ViT's final norm (on every token:
the same numbers at [CLS]). ``max_logit_scale`` and ``duplicate_captions`` have no HF field and
travel under ``glassformer_`` keys; the image tower's dropout rates are training settings and are
not written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from glassformer.models.clip.config import CLIPConfig, clip_vision
from glassformer.models.clip.model import CLIP
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

# HF key -> our key; "{}" is the block number.
TOP_KEYS: dict[str, str] = {
    "logit_scale": "logit_scale",
    "visual_projection.weight": "visual_projection.weight",
    "text_projection.weight": "text_projection.weight",
    "text_model.embeddings.token_embedding.weight": "token_embed.weight",
    "text_model.embeddings.position_embedding.weight": "text_positions.weight",
    "text_model.final_layer_norm.weight": "text.final_norm.weight",
    "text_model.final_layer_norm.bias": "text.final_norm.bias",
    "vision_model.embeddings.class_embedding": "vision.cls_token",
    "vision_model.embeddings.patch_embedding.weight": "vision.patch_embed.weight",
    "vision_model.embeddings.position_embedding.weight": "vision.positions",
    "vision_model.pre_layrnorm.weight": "vision.pre_norm.weight",  # (sic: HF's spelling)
    "vision_model.pre_layrnorm.bias": "vision.pre_norm.bias",
    "vision_model.post_layernorm.weight": "vision.norm.weight",
    "vision_model.post_layernorm.bias": "vision.norm.bias",
}
LAYER_KEYS: dict[str, str] = {
    "layer_norm1": "attn_norm", "self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj",
    "self_attn.v_proj": "attn.v_proj", "self_attn.out_proj": "attn.o_proj", "layer_norm2": "ffn_norm",
    "mlp.fc1": "ffn.up", "mlp.fc2": "ffn.down",
}  # fmt: skip
TOWERS: dict[str, str] = {"text_model.encoder.layers": "text.layers", "vision_model.encoder.layers": "vision.blocks"}
RESHAPED = ("vision.cls_token", "vision.positions")  # same numbers, another shape
ACTIVATIONS: dict[str, str] = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                               "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}  # fmt: skip
TO_HF_ACTIVATIONS: dict[str, str] = {"quick_gelu": "quick_gelu", "gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def key_map(config: CLIPConfig) -> dict[str, str]:
    """HF key -> our key for every tensor of a model of this config."""
    out = dict(TOP_KEYS)
    for hf_tower, ours in TOWERS.items():
        layers = config.n_layers if ours.startswith("text") else config.vision.n_layers
        for i in range(layers):
            for hf, mine in LAYER_KEYS.items():
                for leaf in ("weight", "bias"):
                    out[f"{hf_tower}.{i}.{hf}.{leaf}"] = f"{ours}.{i}.{mine}.{leaf}"
    return out


def _activation(value: str, where: str) -> str:
    if value not in ACTIVATIONS:
        raise ValueError(f"config.json {where}.hidden_act={value!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[value]


def _square(value: Any, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"config.json vision_config.{name}={value}: only square images and patches are supported")
        value = value[0]
    return int(value)


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> CLIPConfig:
    """Our config from a Hugging Face ``CLIPModel`` ``config.json`` dict (HF defaults for absent keys)."""
    if hf.get("model_type", "clip") != "clip":
        raise ValueError(f"config.json has model_type={hf.get('model_type')!r}; the clip family reads 'clip' (CLIPModel)")
    text, vision = hf.get("text_config") or {}, hf.get("vision_config") or {}
    vocab = text.get("vocab_size", 49408)
    eos = text.get("eos_token_id", 49407)
    if eos == 2:  # checkpoints from before transformers#24773: the feature is read at the largest id, EOT
        eos = vocab - 1
    tower = clip_vision(
        image_size=_square(vision.get("image_size", 224), "image_size"),
        patch_size=_square(vision.get("patch_size", 32), "patch_size"), in_channels=vision.get("num_channels", 3),
        dim=vision.get("hidden_size", 768), n_layers=vision.get("num_hidden_layers", 12),
        n_heads=vision.get("num_attention_heads", 12), ffn_dim=vision.get("intermediate_size", 3072),
        activation=_activation(vision.get("hidden_act", "quick_gelu"), "vision_config"),
        norm_eps=vision.get("layer_norm_eps", 1e-5), attn_dropout=vision.get("attention_dropout", 0.0),
        init_std=vision.get("initializer_range", 0.02),
    )  # fmt: skip
    fields: dict[str, Any] = dict(
        vision=tower, vocab_size=vocab, dim=text.get("hidden_size", 512), n_layers=text.get("num_hidden_layers", 12),
        n_heads=text.get("num_attention_heads", 8), ffn_dim=text.get("intermediate_size", 2048),
        max_seq_len=text.get("max_position_embeddings", 77),
        activation=_activation(text.get("hidden_act", "quick_gelu"), "text_config"),
        norm_eps=text.get("layer_norm_eps", 1e-5), attn_dropout=text.get("attention_dropout", 0.0),
        projection_dim=hf.get("projection_dim", 512), logit_scale_init=hf.get("logit_scale_init_value", 2.6592),
        max_logit_scale=hf.get("glassformer_max_logit_scale", 100.0),
        duplicate_captions=hf.get("glassformer_duplicate_captions", "mask"),
        # bos and pad are informational (the model reads only EOT); HF's defaults can lie past a small vocabulary
        pad_token_id=min(text.get("pad_token_id", 1), vocab - 1), bos_token_id=min(text.get("bos_token_id", 49406), vocab - 1),
        eos_token_id=eos, init_std=text.get("initializer_range", 0.02),
    )  # fmt: skip
    fields.update(overrides)
    return CLIPConfig(**fields)


def architecture(config: CLIPConfig) -> str:
    """``"CLIPModel"``, or a ``ValueError`` naming the field that has no Hugging Face equivalent."""
    v = config.vision
    if not v.pre_norm or v.patch_bias or v.pooling != "cls" or v.pooler:
        raise ValueError(
            "this image tower has no Hugging Face CLIP equivalent: CLIPVisionModel needs pre_norm=True, "
            f"patch_bias=False, pooling='cls', pooler=False (got pre_norm={v.pre_norm}, patch_bias={v.patch_bias}, "
            f"pooling={v.pooling!r}, pooler={v.pooler})"
        )
    return "CLIPModel"


def config_to_hf(config: CLIPConfig) -> dict[str, Any]:
    """A Hugging Face ``CLIPModel`` ``config.json`` dict for our config."""
    arch, v = architecture(config), config.vision
    text = {
        "model_type": "clip_text_model", "vocab_size": config.vocab_size, "hidden_size": config.dim,
        "intermediate_size": config.ffn_dim, "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads, "max_position_embeddings": config.max_seq_len,
        "hidden_act": TO_HF_ACTIVATIONS[config.activation], "layer_norm_eps": config.norm_eps,
        "attention_dropout": config.attn_dropout, "initializer_range": config.init_std,
        "pad_token_id": config.pad_token_id, "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id, "projection_dim": config.projection_dim,
    }  # fmt: skip
    vision = {
        "model_type": "clip_vision_model", "hidden_size": v.dim, "intermediate_size": v.ffn_dim,
        "num_hidden_layers": v.n_layers, "num_attention_heads": v.n_heads, "num_channels": v.in_channels,
        "image_size": v.image_size, "patch_size": v.patch_size, "hidden_act": TO_HF_ACTIVATIONS[v.activation],
        "layer_norm_eps": v.norm_eps, "attention_dropout": v.attn_dropout, "initializer_range": v.init_std,
        "projection_dim": config.projection_dim,
    }  # fmt: skip
    return {
        "architectures": [arch], "model_type": "clip", "projection_dim": config.projection_dim,
        "logit_scale_init_value": config.logit_scale_init, "initializer_factor": 1.0,
        "text_config": text, "vision_config": vision,
        "glassformer_max_logit_scale": config.max_logit_scale,
        "glassformer_duplicate_captions": config.duplicate_captions,
    }  # fmt: skip


def state_dict_from_hf(state: dict[str, Tensor], model: CLIP) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an HF state dict to ours (reshaping the two tensors of RESHAPED); ``(ours, unused_hf_keys)``."""
    table, shapes = key_map(model.config), {k: v.shape for k, v in model.state_dict().items()}
    ours: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        if key not in table:
            unused.append(key)
            continue
        mine = table[key]
        fits = mine in RESHAPED and tensor.numel() == shapes[mine].numel()
        ours[mine] = tensor.reshape(shapes[mine]) if fits else tensor
    return ours, unused


def state_dict_to_hf(model: CLIP) -> dict[str, Tensor]:
    """Our weights under the HF names and shapes."""
    inverse = {ours: hf for hf, ours in key_map(model.config).items()}
    out = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if key in RESHAPED:
            tensor = tensor.reshape(-1) if key == "vision.cls_token" else tensor[0]
        out[inverse[key]] = tensor.contiguous()
    return out


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> CLIP:
    """Load a Hugging Face ``CLIPModel`` folder (or hub id in the local cache) strictly: a missing,
    unexpected or mis-shaped tensor is an error that names it. ``overrides`` change config fields."""
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    model = CLIP(config_from_hf(folder_config.data, **overrides))
    ours, unused = state_dict_from_hf(read_safetensors(folder), model)
    if unused:
        raise WeightsError(f"{folder}: checkpoint tensors the clip family does not know how to place: {unused[:10]}")
    load_into(model, ours, source=str(folder))
    return model


def save_pretrained(model: CLIP, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (and the tokenizer, if given) in the HF layout."""
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)
