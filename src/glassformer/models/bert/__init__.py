"""BERT: a post-norm Transformer encoder with masked-LM, sequence and token classification heads.

``Bert`` and ``BertConfig`` cover BERT, RoBERTa-style and DistilBERT-style encoders (see
``config.py``). ``hf.from_pretrained`` / ``hf.save_pretrained`` read and write the Hugging Face
layout; ``mlm.py`` masks tokens for pretraining; ``finetune.py`` trains classifiers.
``FAMILY`` declares the presets (each with a ``-tiny`` twin), data and formats.
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.models.bert.config import PRESETS, TINY, BertConfig
from glassformer.models.bert.model import IGNORE_INDEX, Bert, mean_pool
from glassformer.registry import Family, Format

__all__ = ["FAMILY", "IGNORE_INDEX", "Bert", "BertConfig", "mean_pool", "example_batch"]


def example_batch(config: BertConfig, batch_size: int = 2, seq_len: int = 12) -> dict[str, Any]:
    """A random batch (one row right-padded) with labels fitting ``config.head``.

    The presets carry the masked-LM head (they are pretraining shapes), so their batch has a loss;
    a head-less config gets no labels, since it has nothing to score them with."""
    seq_len = min(seq_len, config.max_tokens)
    low = config.pad_token_id + 1
    ids = torch.randint(low, config.vocab_size, (batch_size, seq_len))
    mask = torch.ones_like(ids)
    mask[0, seq_len - 3 :] = 0
    ids[mask == 0] = config.pad_token_id
    batch: dict[str, Any] = dict(input_ids=ids, attention_mask=mask)
    if config.head == "mlm":
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[:, 1:4] = ids[:, 1:4]
        batch["labels"] = labels
    elif config.head == "sequence":
        batch["labels"] = torch.randint(0, config.num_labels, (batch_size,))
    elif config.head == "token":
        labels = torch.randint(0, config.num_labels, (batch_size, seq_len))
        labels[mask == 0] = IGNORE_INDEX
        batch["labels"] = labels
    return batch


def tiny(config: BertConfig) -> BertConfig:
    """The toy twin of a preset: same choices (offsets, segments, pooler), 2 layers, width 32."""
    return config.replace(**TINY)


FAMILY = Family(
    name="bert",
    model=Bert,
    config=BertConfig,
    # the presets carry the masked-LM head: they are pretraining shapes
    presets={name: (lambda f=fields: BertConfig(**{**f, "head": "mlm"}), description)
             for name, (fields, description) in PRESETS.items()},  # fmt: skip
    tiny=tiny,
    example_batch=example_batch,
    # `glassformer train bert` (or bert-mlm) pretrains BERT-mini with masked-LM
    data={"bert": "glassformer.models.bert.pretrain:build_mlm_data"},
    default_preset="bert-mini",
    aliases={"bert-mlm": "bert-mini"},
    formats=(
        Format("huggingface", load="glassformer.models.bert.hf:from_pretrained",
               save="glassformer.models.bert.hf:save_pretrained", exports="glassformer.models.bert.hf:architecture",
               model_types=("bert", "roberta")),
    ),
    cli="glassformer.models.bert.cli",
)
