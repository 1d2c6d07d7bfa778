"""The Hugging Face layout for Whisper, both ways: ``WhisperForConditionalGeneration`` folders.

A folder holds ``config.json`` (``WhisperConfig`` fields, ``model_type`` "whisper") and
``model.safetensors`` with keys like ``model.decoder.layers.2.encoder_attn.k_proj.weight``
(``WhisperModel``, the base model, drops the ``model.`` prefix; both are read). Every tensor is
copied as is; three need a word:

* ``model.encoder.embed_positions.weight``: the fixed sinusoids, which our model recomputes. On
  import the file's table must equal :func:`whisper_sinusoids` (to 1e-3, which a float16 copy
  meets); on export it is written, because transformers loads it like any weight.
* ``proj_out.weight``: the head, tied to ``model.decoder.embed_tokens.weight``. Ours is tied by
  construction, so a file whose head differs from its embedding is refused; on export it is
  left out, as transformers' own ``save_pretrained`` does.
* key projections have no bias on either side (see ``model.py``).

Only training knobs without an equivalent are dropped: ``activation_dropout`` (a dropout inside
the MLP) and ``encoder_layerdrop``/``decoder_layerdrop``; the generation settings of a real
checkpoint (``suppress_tokens``, ``forced_decoder_ids``) belong to decoding, not to the model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.models.whisper.config import WhisperConfig
from glassformer.models.whisper.model import Whisper, whisper_sinusoids
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

ARCHITECTURE = "WhisperForConditionalGeneration"
POSITIONS_KEY = "model.encoder.embed_positions.weight"
HEAD_KEY = "proj_out.weight"
EMBEDDING_KEY = "model.decoder.embed_tokens.weight"
POSITIONS_ATOL = 1e-3  # a float16 copy of the sinusoids is within 5e-4 of the float32 table

# HF key -> our key, outside the layers.
TOP_KEYS: dict[str, str] = {
    "model.encoder.conv1.weight": "conv1.weight",
    "model.encoder.conv1.bias": "conv1.bias",
    "model.encoder.conv2.weight": "conv2.weight",
    "model.encoder.conv2.bias": "conv2.bias",
    "model.encoder.layer_norm.weight": "encoder.final_norm.weight",
    "model.encoder.layer_norm.bias": "encoder.final_norm.bias",
    EMBEDDING_KEY: "token_embedding.weight",
    "model.decoder.embed_positions.weight": "decoder_positions.weight",
    "model.decoder.layer_norm.weight": "decoder.final_norm.weight",
    "model.decoder.layer_norm.bias": "decoder.final_norm.bias",
}
# HF layer key suffix -> ours (the same in both stacks); the decoder adds LAYER_CROSS_KEYS.
ATTENTION_KEYS: dict[str, str] = {
    "q_proj.weight": "q_proj.weight", "q_proj.bias": "q_proj.bias", "k_proj.weight": "k_proj.weight",
    "v_proj.weight": "v_proj.weight", "v_proj.bias": "v_proj.bias",
    "out_proj.weight": "o_proj.weight", "out_proj.bias": "o_proj.bias",
}  # fmt: skip
LAYER_KEYS: dict[str, str] = {
    **{f"self_attn.{k}": f"attn.{v}" for k, v in ATTENTION_KEYS.items()},
    "self_attn_layer_norm.weight": "attn_norm.weight", "self_attn_layer_norm.bias": "attn_norm.bias",
    "fc1.weight": "ffn.up.weight", "fc1.bias": "ffn.up.bias", "fc2.weight": "ffn.down.weight",
    "fc2.bias": "ffn.down.bias", "final_layer_norm.weight": "ffn_norm.weight", "final_layer_norm.bias": "ffn_norm.bias",
}  # fmt: skip
LAYER_CROSS_KEYS: dict[str, str] = {
    **{f"encoder_attn.{k}": f"cross_attn.{v}" for k, v in ATTENTION_KEYS.items()},
    "encoder_attn_layer_norm.weight": "cross_norm.weight", "encoder_attn_layer_norm.bias": "cross_norm.bias",
}  # fmt: skip


def key_map(config: WhisperConfig) -> dict[str, str]:
    """Every HF key of a ``WhisperForConditionalGeneration`` of this shape -> our key (the learned ones)."""
    table = dict(TOP_KEYS)
    for side, n, extra in (("encoder", config.n_layers, {}), ("decoder", config.n_decoder_layers, LAYER_CROSS_KEYS)):
        for i in range(n):
            for hf, ours in {**LAYER_KEYS, **extra}.items():
                table[f"model.{side}.layers.{i}.{hf}"] = f"{side}.layers.{i}.{ours}"
    return table


def _require(hf: Mapping[str, Any], *names: str) -> None:
    missing = [n for n in names if n not in hf]
    if missing:
        raise ValueError(f"the Whisper config.json has no {', '.join(missing)}; is it a WhisperConfig?")


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> WhisperConfig:
    """Our config from a Hugging Face ``WhisperConfig`` dict; ``overrides`` (e.g. ``attn_backend``) win."""
    if hf.get("model_type", "whisper") != "whisper":
        raise ValueError(f"config.json has model_type={hf['model_type']!r}; the whisper family reads 'whisper'")
    _require(hf, "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads")
    for ours, (a, b) in {"n_heads": ("encoder_attention_heads", "decoder_attention_heads"),
                         "ffn_dim": ("encoder_ffn_dim", "decoder_ffn_dim")}.items():  # fmt: skip
        if a in hf and b in hf and hf[a] != hf[b]:
            raise ValueError(f"{a}={hf[a]} != {b}={hf[b]}: glassformer's Whisper has one {ours} for both stacks")
    if hf.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"activation_function={hf['activation_function']!r}: glassformer's Whisper uses 'gelu'")
    if hf.get("scale_embedding", False):
        raise ValueError("scale_embedding=True (token embeddings times sqrt(d_model)) has no glassformer equivalent")
    if not hf.get("tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings=False: glassformer's Whisper ties the head to the token embedding")
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], dim=hf["d_model"], n_layers=hf["encoder_layers"],
        n_decoder_layers=hf["decoder_layers"], n_heads=hf["encoder_attention_heads"],
        ffn_dim=hf.get("encoder_ffn_dim", 4 * hf["d_model"]), n_mels=hf.get("num_mel_bins", 80),
        max_source_positions=hf.get("max_source_positions", 1500), max_seq_len=hf.get("max_target_positions", 448),
        dropout=hf.get("dropout", 0.0), attn_dropout=hf.get("attention_dropout", 0.0),
        init_std=hf.get("init_std", 0.02), pad_token_id=hf.get("pad_token_id", 50256),
        bos_token_id=hf.get("bos_token_id", 50257), eos_token_id=hf.get("eos_token_id", 50256),
        decoder_start_token_id=hf.get("decoder_start_token_id", 50257),
    )  # fmt: skip
    fields.update(overrides)
    return WhisperConfig(**fields)


def config_to_hf(config: WhisperConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for our config (no generation settings: see the module docstring)."""
    c = config
    return {
        "architectures": [ARCHITECTURE], "model_type": "whisper",
        "vocab_size": c.vocab_size, "d_model": c.dim, "num_mel_bins": c.n_mels,
        "encoder_layers": c.n_layers, "decoder_layers": c.n_decoder_layers,
        "encoder_attention_heads": c.n_heads, "decoder_attention_heads": c.n_heads,
        "encoder_ffn_dim": c.ffn_dim, "decoder_ffn_dim": c.ffn_dim,
        "max_source_positions": c.max_source_positions, "max_target_positions": c.max_seq_len,
        "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
        "dropout": c.dropout, "attention_dropout": c.attn_dropout, "activation_dropout": 0.0,
        "init_std": c.init_std, "pad_token_id": c.pad_token_id, "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id, "decoder_start_token_id": c.decoder_start_token_id,
        # transformers' defaults name GPT-2 token ids that a small vocabulary does not have
        "suppress_tokens": None, "begin_suppress_tokens": None,
    }  # fmt: skip


def _check_fixed(state: Mapping[str, Tensor], config: WhisperConfig) -> None:
    """The positions must be Whisper's sinusoids and the head the token embedding (both are ours by construction)."""
    if POSITIONS_KEY in state:
        table = state[POSITIONS_KEY].float()
        expected = whisper_sinusoids(config.max_source_positions, config.dim)
        if table.shape != expected.shape:
            raise WeightsError(
                f"{POSITIONS_KEY} has shape {tuple(table.shape)}; max_source_positions={config.max_source_positions} "
                f"and d_model={config.dim} make {tuple(expected.shape)}"
            )
        gap = float((table - expected).abs().max())
        if gap > POSITIONS_ATOL:
            raise WeightsError(
                f"{POSITIONS_KEY} differs from Whisper's sinusoids by {gap:.2e} (more than {POSITIONS_ATOL}); "
                "glassformer computes that table and cannot load a trained one"
            )
    if HEAD_KEY in state and EMBEDDING_KEY in state and not torch.equal(state[HEAD_KEY], state[EMBEDDING_KEY]):
        raise WeightsError(f"{HEAD_KEY} differs from {EMBEDDING_KEY}: glassformer's Whisper ties them")


def state_dict_from_hf(state: Mapping[str, Tensor], config: WhisperConfig) -> dict[str, Tensor]:
    """Rename an HF Whisper state dict (with or without the ``model.`` prefix) to our keys.

    Unknown keys are an error naming them; the fixed tensors are checked (:func:`_check_fixed`).
    """
    full = {k if k.startswith("model.") or k == HEAD_KEY else f"model.{k}": v for k, v in state.items()}
    _check_fixed(full, config)
    table = key_map(config)
    unknown = [k for k in full if k not in table and k not in (POSITIONS_KEY, HEAD_KEY)]
    if unknown:
        raise WeightsError(f"Whisper tensors glassformer does not know how to place: {unknown[:10]}")
    return {table[k]: v for k, v in full.items() if k in table}


def state_dict_to_hf(model: Whisper) -> dict[str, Tensor]:
    """Our weights under transformers' names, with the sinusoid table and without the tied head."""
    inverse = {ours: hf for hf, ours in key_map(model.config).items()}
    out = {inverse[k]: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    out[POSITIONS_KEY] = model.encoder_positions.detach().to(model.conv1.weight.dtype).contiguous().cpu()
    return out


def from_hf_state(
    state: Mapping[str, Tensor], hf_config: Mapping[str, Any], *, source: str = "Whisper state dict", **overrides: Any
) -> Whisper:
    """Our model from an HF-named state dict and ``config.json`` dict, without a folder.

    How a converted checkpoint (CTranslate2's ``model.bin``, see ``ct2.py``) becomes a model. The
    weights keep the model's float32 (a float16 state is widened); loading is strict.
    """
    config = config_from_hf(hf_config, **overrides)
    model = Whisper(config)
    load_into(model, state_dict_from_hf(state, config), source=source)
    return model


def architecture(config: WhisperConfig) -> str:
    """The transformers class every Whisper config is saved as (all of ours have an equivalent)."""
    return config_to_hf(config)["architectures"][0]


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> Whisper:
    """Load a transformers Whisper folder (``model_type`` "whisper") strictly; ``overrides`` change config fields."""
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    state = read_safetensors(folder)
    return from_hf_state(state, folder_config.data, source=str(folder), **overrides)


def save_pretrained(model: Whisper, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in transformers' layout (and the tokenizer, if given)."""
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)
