"""``glassformer train transformer-base``'s data: Multi30k translation with one joint vocabulary.

The 2017 Transformer shares one embedding between source, target and the generator, so the
tokenizer is the joint en+de BPE of ``glassformer.data.multi30k``: ``<pad>``, ``<s>``, ``</s>`` on the
config's ids (0, 1, 2), ``<unk>`` next. Each sentence ends with ``</s>``; the decoder input is
``<s>`` followed by the target, the labels the target followed by ``</s>``. ``data.direction`` is
``en-de`` (default) or ``de-en``. The tokenizer has ``vocab_size`` ids, so a smaller model for the
experiment is ``model.vocab_size=8000 model.tgt_vocab_size=8000`` (and its other sizes).
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.data import multi30k as m30k
from glassformer.models.transformer.config import TransformerConfig
from glassformer.registry import DataRequest
from glassformer.tokenizers import ByteLevelBPE

DIRECTIONS = ("en-de", "de-en")


def transformer_layout(config: TransformerConfig) -> m30k.SpecialLayout:
    ids = {"<pad>": config.pad_token_id, "<s>": config.bos_token_id, "</s>": config.eos_token_id}
    low = m30k.low_specials(ids, "TransformerConfig pad/bos/eos")
    roles = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
    return m30k.SpecialLayout(low, (), roles, framing=("A", "</s>"))


def transformer_tokenizer(
    config: TransformerConfig, options: m30k.Multi30kOptions, preset_name: str = "transformer"
) -> ByteLevelBPE:
    """The joint Multi30k BPE of ``config.vocab_size`` ids (source and target must share it)."""
    if config.vocab_size != config.tgt_vocab_size:
        raise ValueError(f"{preset_name}: the Multi30k tokenizer is one joint vocabulary, but vocab_size="
                         f"{config.vocab_size} != tgt_vocab_size={config.tgt_vocab_size}; make them equal")  # fmt: skip
    layout = transformer_layout(config)
    m30k.check_room(
        layout, config.vocab_size, preset_name, lambda n: f"model.vocab_size={n} model.tgt_vocab_size={n}"
    )
    return m30k.multi30k_tokenizer(layout, config.vocab_size, root=options.root, limit=options.limit)


def transformer_batch(
    examples: list[tuple[list[int], list[int]]], config: TransformerConfig
) -> dict[str, torch.Tensor]:
    """``src``/``src_attention_mask`` ``(B, S)``; ``tgt`` (``<s>`` + target), ``labels`` (target + ``</s>``) and
    ``tgt_attention_mask``, all ``(B, T)``; inputs padded with ``pad_token_id``, labels with -100."""
    base = m30k.seq2seq_batch(examples, config.pad_token_id)
    labels = base["labels"]  # (B, T), -100 after each row's </s>
    tgt_attention_mask = (labels != m30k.IGNORE_INDEX).long()  # (B, T)
    bos = labels.new_full((labels.shape[0], 1), config.bos_token_id)
    tgt = torch.cat([bos, labels[:, :-1]], dim=1).masked_fill(
        tgt_attention_mask == 0, config.pad_token_id
    )  # (B, T)
    return {
        "src": base["input_ids"], "src_attention_mask": base["attention_mask"], "tgt": tgt,
        "tgt_attention_mask": tgt_attention_mask, "labels": labels,
    }  # fmt: skip


def multi30k_translation(
    train_config: Any, model_config: TransformerConfig, request: DataRequest
) -> tuple[Any, Any]:
    """Multi30k pairs as Transformer batches. Options: ``glassformer.data.multi30k.Multi30kOptions``."""
    options = m30k.Multi30kOptions.read(request.options, request.preset.name, ("direction",), DIRECTIONS)
    tokenizer = transformer_tokenizer(model_config, options, request.preset.name)
    common = dict(root=options.root, max_len=model_config.max_seq_len)
    train = m30k.translation_examples(tokenizer, (options.direction,), "train", limit=options.limit, **common)
    val = m30k.translation_examples(tokenizer, (options.direction,), "val", limit=options.val_limit, **common)
    m30k.save_run_files(train_config.out_dir, tokenizer, (options.direction,), "translation")

    def collate(examples: list[Any], generator: Any) -> dict[str, torch.Tensor]:
        return transformer_batch(examples, model_config)

    return (m30k.RandomBatches(train, train_config.batch_size, collate),
            m30k.FixedBatches(val, train_config.batch_size, collate))  # fmt: skip
