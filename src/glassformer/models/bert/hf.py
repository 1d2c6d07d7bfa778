"""The Hugging Face layout for BERT, both ways: ``from_pretrained`` and ``save_pretrained``.

A Hugging Face BERT folder holds ``config.json`` (``BertConfig`` fields), ``model.safetensors``
(keys like ``encoder.layer.3.attention.self.query.weight``) and ``vocab.txt``. The names differ
from ours but no tensor needs reshaping: both sides store ``nn.Linear`` weights as
``(out_features, in_features)``, so every weight is copied as is, no transpose (GPT-2's ``Conv1D``
is the family that needs one). Task models prefix the encoder with ``bert.`` (``roberta.`` for
RoBERTa) and add their head's keys.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.models.bert.config import BertConfig
from glassformer.models.bert.model import Bert
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    read_hf_folder,
    read_safetensors,
    write_hf_folder,
)

# HF encoder key -> our key; "{}" is the layer number.
ENCODER_KEYS: dict[str, str] = {
    "embeddings.word_embeddings.weight": "embeddings.word.weight",
    "embeddings.position_embeddings.weight": "embeddings.position.weight",
    "embeddings.token_type_embeddings.weight": "embeddings.token_type.weight",
    "embeddings.LayerNorm.weight": "embeddings.norm.weight",
    "embeddings.LayerNorm.bias": "embeddings.norm.bias",
    "encoder.layer.{}.attention.self.query.weight": "encoder.layers.{}.attn.q_proj.weight",
    "encoder.layer.{}.attention.self.query.bias": "encoder.layers.{}.attn.q_proj.bias",
    "encoder.layer.{}.attention.self.key.weight": "encoder.layers.{}.attn.k_proj.weight",
    "encoder.layer.{}.attention.self.key.bias": "encoder.layers.{}.attn.k_proj.bias",
    "encoder.layer.{}.attention.self.value.weight": "encoder.layers.{}.attn.v_proj.weight",
    "encoder.layer.{}.attention.self.value.bias": "encoder.layers.{}.attn.v_proj.bias",
    "encoder.layer.{}.attention.output.dense.weight": "encoder.layers.{}.attn.o_proj.weight",
    "encoder.layer.{}.attention.output.dense.bias": "encoder.layers.{}.attn.o_proj.bias",
    # post-norm: the norm after the attention residual is our block's attn_norm
    "encoder.layer.{}.attention.output.LayerNorm.weight": "encoder.layers.{}.attn_norm.weight",
    "encoder.layer.{}.attention.output.LayerNorm.bias": "encoder.layers.{}.attn_norm.bias",
    "encoder.layer.{}.intermediate.dense.weight": "encoder.layers.{}.ffn.up.weight",
    "encoder.layer.{}.intermediate.dense.bias": "encoder.layers.{}.ffn.up.bias",
    "encoder.layer.{}.output.dense.weight": "encoder.layers.{}.ffn.down.weight",
    "encoder.layer.{}.output.dense.bias": "encoder.layers.{}.ffn.down.bias",
    "encoder.layer.{}.output.LayerNorm.weight": "encoder.layers.{}.ffn_norm.weight",
    "encoder.layer.{}.output.LayerNorm.bias": "encoder.layers.{}.ffn_norm.bias",
    "pooler.dense.weight": "pooler.weight",
    "pooler.dense.bias": "pooler.bias",
}

# Head keys, which sit outside the ``bert.`` / ``roberta.`` prefix.
BERT_HEAD_KEYS: dict[str, str] = {
    "cls.predictions.transform.dense.weight": "mlm_transform.weight",
    "cls.predictions.transform.dense.bias": "mlm_transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_norm.bias",
    "cls.predictions.bias": "mlm_bias",
    "cls.seq_relationship.weight": "nsp.weight",
    "cls.seq_relationship.bias": "nsp.bias",
    "classifier.weight": "classifier.weight",
    "classifier.bias": "classifier.bias",
}
ROBERTA_HEAD_KEYS: dict[str, str] = {
    "lm_head.dense.weight": "mlm_transform.weight",
    "lm_head.dense.bias": "mlm_transform.bias",
    "lm_head.layer_norm.weight": "mlm_norm.weight",
    "lm_head.layer_norm.bias": "mlm_norm.bias",
    "lm_head.bias": "mlm_bias",
}
# Tensors that are tied copies or buffers in the HF file: never loaded on their own.
SKIPPED = ("embeddings.position_ids", "embeddings.token_type_ids", "predictions.decoder.", "lm_head.decoder.")

ARCHITECTURE_HEADS: dict[str, str] = {
    "BertModel": "none",
    "BertForMaskedLM": "mlm",
    "BertForPreTraining": "mlm",
    "BertForSequenceClassification": "sequence",
    "BertForTokenClassification": "token",
    "RobertaModel": "none",
    "RobertaForMaskedLM": "mlm",
}
HEAD_ARCHITECTURES: dict[str, str] = {
    "none": "BertModel", "mlm": "BertForMaskedLM",
    "sequence": "BertForSequenceClassification", "token": "BertForTokenClassification",
}
ACTIVATIONS: dict[str, str] = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

def _expand(table: dict[str, str], n_layers: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for hf, ours in table.items():
        if "{}" in hf:
            for i in range(n_layers):
                out[hf.format(i)] = ours.format(i)
        else:
            out[hf] = ours
    return out


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> BertConfig:
    """Our config from a Hugging Face ``config.json`` dict; ``overrides`` win (e.g. a new head)."""
    model_type = hf.get("model_type", "bert")
    if model_type not in ("bert", "roberta"):
        raise ValueError(f"config.json has model_type={model_type!r}; the bert family reads 'bert' and 'roberta'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"position_embedding_type={hf['position_embedding_type']!r} is not supported; only 'absolute'"
        )
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    arch = (hf.get("architectures") or ["BertModel"])[0]
    head = ARCHITECTURE_HEADS.get(arch, "none")
    id2label = hf.get("id2label") or {}
    names = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else ()
    if names and all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        names = ()  # HF's placeholder names carry no information
    hidden_dropout = hf.get("hidden_dropout_prob", 0.1)
    pad = hf.get("pad_token_id", 0)
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=hf["num_attention_heads"], ffn_dim=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 512),
        position_offset=pad + 1 if model_type == "roberta" else 0,
        type_vocab_size=hf.get("type_vocab_size", 2), pad_token_id=pad,
        norm_eps=hf.get("layer_norm_eps", 1e-12), activation=ACTIVATIONS[act], dropout=hidden_dropout,
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout=hf.get("classifier_dropout") if hf.get("classifier_dropout") is not None else hidden_dropout,
        init_std=hf.get("initializer_range", 0.02),
        head=head, num_labels=len(names) or hf.get("num_labels") or len(id2label) or 2, label_names=names,
        nsp=arch == "BertForPreTraining",
    )
    fields.update(overrides)
    if "pooler" not in overrides:  # as HF builds them: masked-LM and token models have no pooler
        fields["pooler"] = fields["head"] in ("none", "sequence") or fields["nsp"]
    return BertConfig(**fields)


def config_to_hf(config: BertConfig) -> dict[str, Any]:
    """A Hugging Face ``config.json`` dict for our config."""
    if config.position_offset not in (0, config.pad_token_id + 1):
        raise ValueError(
            f"position_offset={config.position_offset} has no Hugging Face equivalent (0 for BERT, "
            f"pad_token_id + 1 = {config.pad_token_id + 1} for RoBERTa)"
        )
    if config.pooling != "cls" and config.head == "sequence":
        raise ValueError("pooling='mean' has no Hugging Face BertForSequenceClassification equivalent (it reads [CLS])")
    roberta = config.position_offset > 0
    arch = HEAD_ARCHITECTURES[config.head]
    if config.head == "mlm" and config.nsp:
        arch = "BertForPreTraining"
    if roberta:
        if config.head not in ("none", "mlm"):
            raise ValueError("RoBERTa-style export supports head 'none' and 'mlm' only")
        arch = arch.replace("Bert", "Roberta")
    act = {v: k for k, v in ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[config.activation]
    out: dict[str, Any] = {
        "architectures": [arch],
        "model_type": "roberta" if roberta else "bert",
        "vocab_size": config.vocab_size, "hidden_size": config.dim, "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads, "intermediate_size": config.ffn_dim,
        "max_position_embeddings": config.max_seq_len,
        # no segments (DistilBERT-style) is one segment whose embedding is zero (state_dict_to_hf)
        "type_vocab_size": max(config.type_vocab_size, 1),
        "pad_token_id": config.pad_token_id, "layer_norm_eps": config.norm_eps, "hidden_act": act,
        "hidden_dropout_prob": config.dropout, "attention_probs_dropout_prob": config.attn_dropout,
        "classifier_dropout": config.classifier_dropout, "initializer_range": config.init_std,
        "position_embedding_type": "absolute",
    }
    if config.head in ("sequence", "token"):
        names = config.label_names or tuple(f"LABEL_{i}" for i in range(config.num_labels))
        out["id2label"] = {str(i): n for i, n in enumerate(names)}
        out["label2id"] = {n: i for i, n in enumerate(names)}
    return out


def _key_map(config: BertConfig, roberta: bool) -> dict[str, str]:
    """HF key -> our key for a model of this config, with the encoder under its task prefix."""
    prefix = "roberta." if roberta else "bert."
    table = {prefix + k: v for k, v in _expand(ENCODER_KEYS, config.n_layers).items()}
    table.update(ROBERTA_HEAD_KEYS if roberta else BERT_HEAD_KEYS)
    return table


def state_dict_from_hf(state: dict[str, Tensor], config: BertConfig) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an HF state dict to ours. Returns ``(ours, unused_hf_keys)``.

    HF base models (``BertModel``) have no prefix, task models do; both are accepted.
    """
    roberta = any(k.startswith("roberta.") or k.startswith("lm_head.") for k in state) or config.position_offset > 0
    table = _key_map(config, roberta)
    prefix = "roberta." if roberta else "bert."
    ours: dict[str, Tensor] = {}
    unused: list[str] = []
    for key, tensor in state.items():
        full = key if key in table else prefix + key
        if full in table:
            ours[table[full]] = tensor
        elif not any(s in key for s in SKIPPED):
            unused.append(key)
    if "mlm_bias" not in ours:  # some exports keep only the decoder's copy of the bias
        for key in ("cls.predictions.decoder.bias", "lm_head.decoder.bias"):
            if key in state:
                ours["mlm_bias"] = state[key]
    return ours, unused


def state_dict_to_hf(model: Bert) -> dict[str, Tensor]:
    """Our weights under HF names (task layout: ``bert.`` prefix unless the head is ``none``).

    A model without segments gets a single all-zero segment embedding, which HF BERT adds to
    every token: the same function, read back as ``type_vocab_size=1``."""
    roberta = model.config.position_offset > 0
    prefix = "roberta." if roberta else "bert."
    inverse = {v: k for k, v in _key_map(model.config, roberta).items()}
    out: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        hf = inverse[key]
        if model.config.head == "none":
            hf = hf.removeprefix(prefix)
        out[hf] = tensor.detach().contiguous().cpu()
    if model.config.type_vocab_size == 0:  # HF BERT always adds a segment embedding: make it add nothing
        key = "embeddings.token_type_embeddings.weight"
        zeros = torch.zeros(1, model.config.dim, dtype=model.embeddings.word.weight.dtype)
        out[key if model.config.head == "none" else prefix + key] = zeros
    return out


def hf_tensor_names(model: Bert) -> dict[str, str]:
    """Our tensor name -> the Hugging Face one, as :func:`state_dict_to_hf` names them: what a tool
    that addresses single layers (LoRA adapters in peft's format, ``glassformer.peft.io``) translates with."""
    roberta = model.config.position_offset > 0
    prefix = "roberta." if roberta else "bert."
    names = {ours: hf for hf, ours in _key_map(model.config, roberta).items()}
    if model.config.head == "none":
        names = {ours: hf.removeprefix(prefix) for ours, hf in names.items()}
    return names


# Our keys of each head: what a caller who asks for another head than the checkpoint's gets fresh.
HEAD_PARAMS: dict[str, tuple[str, ...]] = {
    "none": (), "mlm": ("mlm_*",), "sequence": ("classifier.*",), "token": ("classifier.*",),
}


def architecture(config: BertConfig) -> str:
    """The Hugging Face architecture a config is saved as (raises ``ValueError`` when none fits)."""
    return config_to_hf(config)["architectures"][0]


def from_pretrained(name_or_path: str | os.PathLike[str], **overrides: Any) -> Bert:
    """Load a Hugging Face BERT folder (or packaged model, or hub id) into ``Bert``, strictly.

    ``overrides`` change config fields. Asking for another ``head`` (typically ``head="sequence",
    num_labels=2`` on a pretrained encoder) is the explicit opt-in for a freshly initialised head:
    its weights, and a pooler the checkpoint lacks, start from their initialisation, and the
    checkpoint's own head is left out; both are named in a warning. Any other missing, unexpected
    or mis-shaped weight is an error that names it.
    """
    folder_config = read_hf_folder(name_or_path)
    folder = folder_config.folder
    config = config_from_hf(folder_config.data, **overrides)
    state = read_safetensors(folder)
    if "pooler" not in overrides and not config.pooler and any(k.endswith("pooler.dense.weight") for k in state):
        # a masked-LM file that keeps its pooler (HF BertForMaskedLM ignores it; ours carries it on)
        config = config.replace(pooler=True)
    model = Bert(config)
    ours, unused_hf = state_dict_from_hf(state, config)
    new_head = "head" in overrides or "pooler" in overrides
    if unused_hf and not new_head:
        raise WeightsError(f"{folder}: checkpoint tensors the bert family does not know how to place: {unused_hf[:10]}")
    new = (*HEAD_PARAMS[config.head], "pooler.*", "nsp.*") if new_head else ()
    report = load_into(model, ours, source=str(folder), new=new, unused=("*",) if new_head else ())
    if report.new:
        warnings.warn(f"{folder.name}: newly initialised (not in the checkpoint): {report.new}", stacklevel=2)
    if report.unused or unused_hf:
        left = [*report.unused, *unused_hf]
        warnings.warn(f"{folder.name}: checkpoint weights this model does not use: {left[:10]}", stacklevel=2)
    return model


def save_pretrained(model: Bert, folder: str | os.PathLike[str], tokenizer: Any = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the HF layout (and the vocabulary, if given)."""
    # a glassformer tokenizer writes tokenizer.json, tokenizer_config.json and vocab.txt
    return write_hf_folder(folder, config_to_hf(model.config), state_dict_to_hf(model), tokenizer)
