"""The Hugging Face layout for T5, both ways: ``T5ForConditionalGeneration`` folders (model_type "t5").

A folder holds ``config.json`` (``T5Config`` fields) and ``model.safetensors`` with keys like
``decoder.block.1.layer.1.EncDecAttention.q.weight``. Every tensor is copied as is; the ones that
need a word:

* ``shared.weight`` is the one embedding; ``encoder.embed_tokens.weight`` and
  ``decoder.embed_tokens.weight`` are copies of it in transformers' files (a file where they
  differ is refused). On export only ``shared.weight`` is written, as transformers does.
* ``lm_head.weight``: T5 1.0 (``tie_word_embeddings`` true) uses the embedding as its head and
  scales the decoder output by ``d_model**-0.5``; T5 1.1 (false) has its own head, unscaled.
  transformers 5 keeps the choice as ``scale_decoder_outputs``; both spellings are read.
* the relative position bias lives in the first block of each stack
  (``...block.0.layer.0.SelfAttention.relative_attention_bias.weight``); transformers' files may
  carry an unused one for the decoder's cross-attention, which is dropped.

``feed_forward_proj`` "relu" is our ``activation="relu"`` and "gated-gelu" our ``"geglu_tanh"``
(``wi_0`` is the gate, ``wi_1`` the linear half). T5's task prefixes and sentinel layout are not in
transformers' config; they are kept under the ``glassformer_`` keys, which transformers ignores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.models.t5.config import T5_TASK_PREFIXES, T5Config
from glassformer.models.t5.model import T5
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

ARCHITECTURE = "T5ForConditionalGeneration"
EMBEDDING_KEY = "shared.weight"
HEAD_KEY = "lm_head.weight"
COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # of shared.weight
UNUSED = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"
FFN_PROJ = {"relu": "relu", "geglu_tanh": "gated-gelu"}  # ours -> transformers' feed_forward_proj
ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
FFN = {"relu": {"wi": "up", "wo": "down"}, "geglu_tanh": {"wi_0": "gate", "wi_1": "up", "wo": "down"}}


def _layer_keys(config: T5Config, decoder: bool) -> dict[str, str]:
    """One block's HF key suffix -> ours. The decoder's block has three sublayers, the encoder's two."""
    table = {f"layer.0.SelfAttention.{hf}.weight": f"attn.{ours}.weight" for hf, ours in ATTENTION.items()}
    table["layer.0.layer_norm.weight"] = "attn_norm.weight"
    ffn = 1
    if decoder:
        table.update({f"layer.1.EncDecAttention.{hf}.weight": f"cross_attn.{o}.weight" for hf, o in ATTENTION.items()})
        table["layer.1.layer_norm.weight"] = "cross_norm.weight"
        ffn = 2
    dense = FFN[config.activation]
    table.update({f"layer.{ffn}.DenseReluDense.{hf}.weight": f"ffn.{ours}.weight" for hf, ours in dense.items()})
    table[f"layer.{ffn}.layer_norm.weight"] = "ffn_norm.weight"
    return table


def key_map(config: T5Config) -> dict[str, str]:
    """Every HF key of a ``T5ForConditionalGeneration`` of this shape -> our key (the ones we store)."""
    table = {EMBEDDING_KEY: "shared.weight"}
    for side, n in (("encoder", config.n_layers), ("decoder", config.n_decoder_layers)):
        for i in range(n):
            for hf, ours in _layer_keys(config, side == "decoder").items():
                table[f"{side}.block.{i}.{hf}"] = f"{side}.layers.{i}.{ours}"
        bias_key = f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        table[bias_key] = f"{side}_bias.embedding.weight"
        table[f"{side}.final_layer_norm.weight"] = f"{side}.final_norm.weight"
    if not config.tie_embeddings:
        table[HEAD_KEY] = "lm_head.weight"
    return table


def _activation(hf: Mapping[str, Any]) -> str:
    proj = hf.get("feed_forward_proj", "relu")
    for ours, theirs in FFN_PROJ.items():
        if proj == theirs:
            return ours
    raise ValueError(
        f"feed_forward_proj={proj!r} has no glassformer equivalent; the t5 family reads 'relu' (T5 1.0) "
        "and 'gated-gelu' (T5 1.1)"
    )


def _tied(hf: Mapping[str, Any]) -> bool:
    """Whether the decoder output is rescaled before a head that is the embedding (T5 1.0)."""
    return bool(hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)))


def config_from_hf(hf: Mapping[str, Any], **overrides: Any) -> T5Config:
    """Our config from a Hugging Face ``T5Config`` dict; ``overrides`` (e.g. ``attn_backend``) win."""
    if hf.get("model_type", "t5") != "t5":
        raise ValueError(f"config.json has model_type={hf['model_type']!r}; the t5 family reads 't5'")
    missing = [k for k in ("vocab_size", "d_model", "num_layers", "num_heads") if k not in hf]
    if missing:
        raise ValueError(f"the T5 config.json has no {', '.join(missing)}; is it a T5Config?")
    pad = hf.get("pad_token_id", 0)
    start = hf.get("decoder_start_token_id", pad)
    if start != pad:
        raise ValueError(f"decoder_start_token_id={start} != pad_token_id={pad}: glassformer's T5 starts from pad")
    eos = hf.get("eos_token_id", 1)
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], dim=hf["d_model"], n_heads=hf["num_heads"], head_dim=hf.get("d_kv", 64),
        n_layers=hf["num_layers"], n_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        ffn_dim=hf.get("d_ff", 2048), activation=_activation(hf), tie_embeddings=_tied(hf),
        num_buckets=hf.get("relative_attention_num_buckets", 32),
        max_distance=hf.get("relative_attention_max_distance", 128), dropout=hf.get("dropout_rate", 0.1),
        norm_eps=hf.get("layer_norm_epsilon", 1e-6), init_factor=hf.get("initializer_factor", 1.0),
        pad_token_id=pad, eos_token_id=eos[0] if isinstance(eos, list) else eos,
        max_seq_len=hf.get("n_positions", 512),
    )  # fmt: skip
    fields.update({k.removeprefix("glassformer_"): v for k, v in hf.items() if k.startswith("glassformer_")})
    if "glassformer_sentinel_start_id" not in hf:  # a file from transformers: Google's vocabulary or an unknown one
        google = fields["vocab_size"] == 32128
        fields["sentinel_start_id"] = 32099 if google else None
        multitask = google and fields["tie_embeddings"]  # only T5 1.0 was trained on the supervised tasks
        fields["task_prefixes"] = T5_TASK_PREFIXES if multitask else ()
    fields.update(overrides)
    return T5Config.from_dict(fields, source="T5 config.json")


def config_to_hf(config: T5Config) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for our config, with our T5-only fields under ``glassformer_``."""
    c = config
    return {
        "architectures": [ARCHITECTURE], "model_type": "t5", "vocab_size": c.vocab_size, "d_model": c.dim,
        "d_kv": c.head_dim, "d_ff": c.ffn_dim, "num_layers": c.n_layers, "num_decoder_layers": c.n_decoder_layers,
        "num_heads": c.n_heads, "relative_attention_num_buckets": c.num_buckets,
        "relative_attention_max_distance": c.max_distance, "dropout_rate": c.dropout,
        "layer_norm_epsilon": c.norm_eps, "initializer_factor": c.init_factor,
        "feed_forward_proj": FFN_PROJ[c.activation], "tie_word_embeddings": c.tie_embeddings,
        "is_encoder_decoder": True, "pad_token_id": c.pad_token_id, "eos_token_id": c.eos_token_id,
        "decoder_start_token_id": c.decoder_start_token_id,
        "glassformer_max_seq_len": c.max_seq_len, "glassformer_label_smoothing": c.label_smoothing,
        "glassformer_n_sentinels": c.n_sentinels, "glassformer_sentinel_start_id": c.sentinel_start_id,
        "glassformer_task_prefixes": list(c.task_prefixes),
    }  # fmt: skip


def state_dict_from_hf(state: Mapping[str, Tensor], config: T5Config) -> dict[str, Tensor]:
    """Rename an HF T5 state dict to our keys; unknown keys and untied copies are errors naming them."""
    if EMBEDDING_KEY not in state:
        raise WeightsError(f"the T5 weights have no {EMBEDDING_KEY}; is this a T5ForConditionalGeneration file?")
    for key in COPIES:
        if key in state and not torch.equal(state[key], state[EMBEDDING_KEY]):
            raise WeightsError(f"{key} differs from {EMBEDDING_KEY}: glassformer's T5 has one shared embedding")
    full = dict(state)
    if HEAD_KEY in full and config.tie_embeddings:
        if not torch.equal(full[HEAD_KEY], full[EMBEDDING_KEY]):
            raise WeightsError(
                f"{HEAD_KEY} differs from {EMBEDDING_KEY} but the config ties them (tie_word_embeddings / "
                "scale_decoder_outputs true): T5 1.0 has no separate head. Set tie_word_embeddings=false for a T5 1.1"
            )
        del full[HEAD_KEY]
    if not config.tie_embeddings and HEAD_KEY not in full:
        full[HEAD_KEY] = full[EMBEDDING_KEY].clone()  # what transformers does: the head tied to the embedding
    table = key_map(config)
    unknown = [k for k in full if k not in table and k not in (*COPIES, UNUSED)]
    if unknown:
        raise WeightsError(f"T5 tensors glassformer does not know how to place: {unknown[:10]}")
    return {table[k]: v for k, v in full.items() if k in table}


def state_dict_to_hf(model: T5) -> dict[str, Tensor]:
    """Our weights under transformers' names (``shared.weight`` once; ``lm_head.weight`` when untied)."""
    inverse = {ours: hf for hf, ours in key_map(model.config).items()}
    return {inverse[k]: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def from_hf_state(state: Mapping[str, Tensor], hf_config: Mapping[str, Any], *, source: str = "T5 state dict",
                  **overrides: Any) -> T5:  # fmt: skip
    """Our model from an HF-named state dict and ``config.json`` dict (strict: every tensor placed)."""
    config = config_from_hf(hf_config, **overrides)
    model = T5(config)
    load_into(model, state_dict_from_hf(state, config), source=source)
    return model


def architecture(config: T5Config) -> str:
    """The transformers class every T5 config is saved as (all of ours have an equivalent)."""
    return config_to_hf(config)["architectures"][0]


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> T5:
    """Load a transformers T5 folder (``model_type`` "t5") strictly; ``overrides`` change config fields."""
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    return from_hf_state(read_safetensors(folder), folder_config.data, source=str(folder), **overrides)


def save_pretrained(model: T5, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in transformers' layout (and the tokenizer, if given)."""
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)
