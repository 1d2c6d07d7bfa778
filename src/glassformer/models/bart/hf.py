"""The Hugging Face layout for BART, both ways: ``BartForConditionalGeneration`` folders.

A folder holds ``config.json`` (``BartConfig`` fields, ``model_type`` "bart") and
``model.safetensors`` with keys like ``model.decoder.layers.2.encoder_attn.k_proj.weight``
(``BartModel``, the base model, drops the ``model.`` prefix; both are read). Every tensor is
copied as is; the tied ones need a word: ``model.shared.weight`` is the one token embedding, and
``model.encoder.embed_tokens.weight``, ``model.decoder.embed_tokens.weight`` and
``lm_head.weight`` are the same matrix. On import any of them may stand for it, and one that
differs from the others is refused (ours are tied by construction); on export only
``model.shared.weight`` is written, as transformers' own ``save_pretrained`` does.

Dropped on import, because they only act in training and our blocks have no equivalent:
``activation_dropout`` (a dropout inside the FFN), ``encoder_layerdrop``/``decoder_layerdrop``
and ``classifier_dropout``. Decoding settings travel: ``decoder_start_token_id`` and
``forced_bos_token_id`` (from ``config.json`` or ``generation_config.json``). Ours never forces
``</s>`` at the length limit, so an export writes ``forced_eos_token_id: null`` and
transformers' ``generate`` then decodes as ours does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.models.bart.config import BartConfig
from glassformer.models.bart.model import Bart
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

ARCHITECTURE = "BartForConditionalGeneration"
SHARED_KEY = "model.shared.weight"
TIED_KEYS = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
ACTIVATIONS_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}

# HF key -> our key, outside the layers.
TOP_KEYS: dict[str, str] = {
    SHARED_KEY: "embed_tokens.weight",
    "final_logits_bias": "final_logits_bias",
    "model.encoder.embed_positions.weight": "encoder_positions.weight",
    "model.encoder.layernorm_embedding.weight": "encoder_embed_norm.weight",
    "model.encoder.layernorm_embedding.bias": "encoder_embed_norm.bias",
    "model.decoder.embed_positions.weight": "decoder_positions.weight",
    "model.decoder.layernorm_embedding.weight": "decoder_embed_norm.weight",
    "model.decoder.layernorm_embedding.bias": "decoder_embed_norm.bias",
}
_PROJECTIONS = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "out_proj": "o_proj"}
ATTENTION_KEYS: dict[str, str] = {
    f"{hf}.{p}": f"{ours}.{p}" for hf, ours in _PROJECTIONS.items() for p in ("weight", "bias")
}
_NORMS = {
    "self_attn_layer_norm": "attn_norm",
    "final_layer_norm": "ffn_norm",
    "fc1": "ffn.up",
    "fc2": "ffn.down",
}
LAYER_KEYS: dict[str, str] = {
    **{f"self_attn.{k}": f"attn.{v}" for k, v in ATTENTION_KEYS.items()},
    **{f"{hf}.{p}": f"{ours}.{p}" for hf, ours in _NORMS.items() for p in ("weight", "bias")},
}
LAYER_CROSS_KEYS: dict[str, str] = {
    **{f"encoder_attn.{k}": f"cross_attn.{v}" for k, v in ATTENTION_KEYS.items()},
    "encoder_attn_layer_norm.weight": "cross_norm.weight", "encoder_attn_layer_norm.bias": "cross_norm.bias",
}  # fmt: skip


def key_map(config: BartConfig) -> dict[str, str]:
    """Every HF key of a ``BartForConditionalGeneration`` of this shape -> our key (tied copies left out)."""
    table = dict(TOP_KEYS)
    for side, n, extra in (
        ("encoder", config.n_layers, {}),
        ("decoder", config.n_decoder_layers, LAYER_CROSS_KEYS),
    ):
        for i in range(n):
            for hf, ours in {**LAYER_KEYS, **extra}.items():
                table[f"model.{side}.layers.{i}.{hf}"] = f"{side}.layers.{i}.{ours}"
    return table


def _same_for_both_stacks(hf: Mapping[str, Any]) -> None:
    """Our BART has one head count and one FFN width for both stacks: refuse a config that differs."""
    for ours, (a, b) in {"n_heads": ("encoder_attention_heads", "decoder_attention_heads"),
                         "ffn_dim": ("encoder_ffn_dim", "decoder_ffn_dim")}.items():  # fmt: skip
        if a in hf and b in hf and hf[a] != hf[b]:
            raise ValueError(f"{a}={hf[a]} != {b}={hf[b]}: glassformer's BART has one {ours} for both stacks")


def config_from_hf(
    hf: Mapping[str, Any], generation: Mapping[str, Any] | None = None, **overrides: Any
) -> BartConfig:
    """Our config from a Hugging Face ``BartConfig`` dict (and ``generation_config.json``'s); ``overrides`` win."""
    if hf.get("model_type", "bart") != "bart":
        raise ValueError(f"config.json has model_type={hf['model_type']!r}; the bart family reads 'bart'")
    missing = [
        k
        for k in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads")
        if k not in hf
    ]
    if missing:
        raise ValueError(f"the BART config.json has no {', '.join(missing)}; is it a BartConfig?")
    _same_for_both_stacks(hf)
    act = hf.get("activation_function", "gelu")
    if act not in ACTIVATIONS_FROM_HF:
        raise ValueError(
            f"activation_function={act!r} has no glassformer equivalent; BART here takes {list(ACTIVATIONS_FROM_HF)}"
        )
    if not hf.get("tie_word_embeddings", True):
        raise ValueError(
            "tie_word_embeddings=False has no glassformer equivalent: our BART ties the head to the embedding"
        )
    gen = {**hf, **(generation or {})}  # generation_config.json's decoding settings win
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], dim=hf["d_model"], n_layers=hf["encoder_layers"], n_decoder_layers=hf["decoder_layers"],
        n_heads=hf["encoder_attention_heads"], ffn_dim=hf.get("encoder_ffn_dim", 4 * hf["d_model"]),
        max_seq_len=hf.get("max_position_embeddings", 1024), dropout=hf.get("dropout", 0.1),
        attn_dropout=hf.get("attention_dropout", 0.0), activation=ACTIVATIONS_FROM_HF[act],
        scale_embedding=bool(hf.get("scale_embedding", False)), init_std=hf.get("init_std", 0.02),
        pad_token_id=hf.get("pad_token_id", 1), bos_token_id=hf.get("bos_token_id", 0), eos_token_id=hf.get("eos_token_id", 2),
        decoder_start_token_id=gen.get("decoder_start_token_id", 2), forced_bos_token_id=gen.get("forced_bos_token_id"),
    )  # fmt: skip
    fields.update(overrides)
    return BartConfig(**fields)


def config_to_hf(config: BartConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for our config (``forced_eos_token_id`` off: see the module docstring)."""
    c = config
    return {
        "architectures": [ARCHITECTURE], "model_type": "bart", "vocab_size": c.vocab_size, "d_model": c.dim,
        "encoder_layers": c.n_layers, "decoder_layers": c.n_decoder_layers,
        "encoder_attention_heads": c.n_heads, "decoder_attention_heads": c.n_heads,
        "encoder_ffn_dim": c.ffn_dim, "decoder_ffn_dim": c.ffn_dim, "max_position_embeddings": c.max_seq_len,
        "activation_function": ACTIVATIONS_TO_HF[c.activation], "scale_embedding": c.scale_embedding,
        "dropout": c.dropout, "attention_dropout": c.attn_dropout, "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "init_std": c.init_std, "tie_word_embeddings": True,
        "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
        "decoder_start_token_id": c.decoder_start_token_id, "forced_bos_token_id": c.forced_bos_token_id,
        "forced_eos_token_id": None,
    }  # fmt: skip


def _shared_embedding(full: dict[str, Tensor]) -> None:
    """Put the one token embedding under ``model.shared.weight``; refuse tied copies that differ."""
    present = [k for k in (SHARED_KEY, *TIED_KEYS) if k in full]
    if not present:
        raise WeightsError(f"no token embedding: none of {SHARED_KEY}, {', '.join(TIED_KEYS)} is in the file")
    first = full[present[0]]
    for key in present[1:]:
        if not torch.equal(full[key], first):
            raise WeightsError(
                f"{key} differs from {present[0]}: glassformer's BART ties them into one matrix"
            )
    for key in TIED_KEYS:
        full.pop(key, None)
    full[SHARED_KEY] = first


def state_dict_from_hf(state: Mapping[str, Tensor], config: BartConfig) -> dict[str, Tensor]:
    """Rename an HF BART state dict (with or without the ``model.`` prefix) to our keys.

    A missing ``final_logits_bias`` reads as zeros (transformers does the same); unknown keys are
    an error naming them.
    """
    top = {"final_logits_bias", "lm_head.weight"}
    full = {k if k.startswith("model.") or k in top else f"model.{k}": v for k, v in state.items()}
    _shared_embedding(full)
    full.setdefault("final_logits_bias", torch.zeros(1, config.vocab_size, dtype=full[SHARED_KEY].dtype))
    table = key_map(config)
    unknown = [k for k in full if k not in table]
    if unknown:
        raise WeightsError(f"BART tensors glassformer does not know how to place: {unknown[:10]}")
    return {table[k]: v for k, v in full.items()}


def state_dict_to_hf(model: Bart) -> dict[str, Tensor]:
    """Our weights under transformers' names, the embedding once (as ``model.shared.weight``)."""
    inverse = {ours: hf for hf, ours in key_map(model.config).items()}
    return {inverse[k]: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def architecture(config: BartConfig) -> str:
    """The transformers class every BART config is saved as (all of ours have an equivalent)."""
    return config_to_hf(config)["architectures"][0]


def _generation_settings(folder: Path) -> dict[str, Any]:
    path = folder / "generation_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> Bart:
    """Load a transformers BART folder (``model_type`` "bart") strictly; ``overrides`` change config fields."""
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    config = config_from_hf(folder_config.data, _generation_settings(Path(folder)), **overrides)
    model = Bart(config)
    state = read_safetensors(folder)
    load_into(model, state_dict_from_hf(state, config), source=str(folder))
    return model


def save_pretrained(model: Bart, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in transformers' layout (and the tokenizer, if given)."""
    if tokenizer is not None:
        model.check_tokenizer(tokenizer)
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)


__all__ = [
    "ARCHITECTURE", "architecture", "config_from_hf", "config_to_hf", "from_pretrained", "key_map",
    "save_pretrained", "state_dict_from_hf", "state_dict_to_hf",
]  # fmt: skip
