"""``glassformer train t5-multi30k``'s data: Multi30k translation with task prefixes, and span corruption.

The tokenizer is the joint en+de BPE of ``glassformer.data.multi30k`` laid out as T5's vocabulary:
``<pad>`` and ``</s>`` on the config's ids (0 and 1), ``<unk>`` next, the ``<extra_id_i>`` sentinels on
the top ids (``<extra_id_0>`` = ``sentinel_start_id`` = ``vocab_size - 1``). Every text ends with
``</s>``, as T5's do.

* ``multi30k_translation``: ``"translate English to German: " + source`` -> target; ``data.direction``
  is ``en-de`` (default), ``de-en`` or ``both`` (one model for the two directions, each pair twice,
  told apart by the prefix: the issue's fine-tuning setting).
* ``multi30k_span_corruption``: both sides of the training text as monolingual sentences, corrupted
  as T5 pretrains (``glassformer.data.span_corruption``: 15% noise in spans of 3 on average).
"""

from __future__ import annotations

from typing import Any

from glassformer.data import multi30k as m30k
from glassformer.data.span_corruption import (
    SpanCorruptionCollator,
    sentinel_ids_from_tokenizer,
    sentinel_tokens,
)
from glassformer.models.t5.config import T5Config, check_tokenizer
from glassformer.registry import DataRequest
from glassformer.tokenizers import ByteLevelBPE

DIRECTIONS = ("en-de", "de-en", "both")


def t5_layout(config: T5Config) -> m30k.SpecialLayout:
    """T5's special tokens where ``config`` puts them; sentinels must sit on the top ids."""
    low = m30k.low_specials({"<pad>": config.pad_token_id, "</s>": config.eos_token_id}, "T5Config pad/eos")
    high: tuple[str, ...] = ()
    if config.sentinel_start_id is not None:
        if config.sentinel_start_id != config.vocab_size - 1:
            raise ValueError(
                f"T5Config.sentinel_start_id={config.sentinel_start_id}: the Multi30k tokenizer puts <extra_id_0> "
                f"on the top id, vocab_size - 1 = {config.vocab_size - 1}; set model.sentinel_start_id={config.vocab_size - 1}"
            )
        high = tuple(sentinel_tokens(config.n_sentinels))
    roles = {"pad": "<pad>", "eos": "</s>", "unk": "<unk>"}
    return m30k.SpecialLayout(low, high, roles, framing=("A", "</s>"))


def t5_tokenizer(config: T5Config, options: m30k.Multi30kOptions, preset_name: str = "t5") -> ByteLevelBPE:
    """The Multi30k BPE that fits ``config`` (checked: vocabulary size, pad/eos and sentinel ids)."""
    layout = t5_layout(config)
    top = "" if config.sentinel_start_id is None else " model.sentinel_start_id={}"
    m30k.check_room(layout, config.vocab_size, preset_name,
                    lambda n: f"model.vocab_size={n}" + top.format(n - 1))  # fmt: skip
    tokenizer = m30k.multi30k_tokenizer(layout, config.vocab_size, root=options.root, limit=options.limit)
    check_tokenizer(config, tokenizer)
    if (
        config.sentinel_start_id is not None
        and sentinel_ids_from_tokenizer(tokenizer, config.n_sentinels) != config.sentinel_ids
    ):
        raise ValueError(f"{preset_name}: the tokenizer's sentinel ids differ from T5Config.sentinel_ids")
    return tokenizer


def _collate(config: T5Config) -> m30k.Collate:
    return lambda examples, generator: m30k.seq2seq_batch(examples, config.pad_token_id)


def multi30k_translation(train_config: Any, model_config: T5Config, request: DataRequest) -> tuple[Any, Any]:
    """Prefixed translation pairs: ``input_ids``/``attention_mask``/``labels`` batches (the model shifts
    the labels into its decoder inputs). Options: ``glassformer.data.multi30k.Multi30kOptions``."""
    options = m30k.Multi30kOptions.read(request.options, request.preset.name, ("direction",), DIRECTIONS)
    directions = ("en-de", "de-en") if options.direction == "both" else (options.direction,)
    for direction in directions:
        if model_config.task_prefixes and m30k.task_prefix(direction) not in model_config.task_prefixes:
            raise ValueError(f"{request.preset.name}: T5Config.task_prefixes {list(model_config.task_prefixes)} lacks "
                             f"{m30k.task_prefix(direction)!r}; add it (model.task_prefixes=[...]) to train {direction}")  # fmt: skip
    tokenizer = t5_tokenizer(model_config, options, request.preset.name)
    common = dict(root=options.root, max_len=model_config.max_seq_len, prefixed=True)
    train = m30k.translation_examples(tokenizer, directions, "train", limit=options.limit, **common)
    val = m30k.translation_examples(tokenizer, directions, "val", limit=options.val_limit, **common)
    m30k.save_run_files(train_config.out_dir, tokenizer, directions, "translation")
    collate = _collate(model_config)
    return (m30k.RandomBatches(train, train_config.batch_size, collate),
            m30k.FixedBatches(val, train_config.batch_size, collate))  # fmt: skip


def multi30k_span_corruption(
    train_config: Any, model_config: T5Config, request: DataRequest
) -> tuple[Any, Any]:
    """T5 pretraining on the English and German training sentences. Options: ``root``, ``limit``,
    ``val_limit``, ``noise_density`` (0.15) and ``mean_noise_span_length`` (3)."""
    extra = ("noise_density", "mean_noise_span_length")
    options = m30k.Multi30kOptions.read(request.options, request.preset.name, extra)
    if model_config.sentinel_start_id is None:
        raise ValueError(
            f"{request.preset.name}: span corruption needs sentinels; the model has sentinel_start_id=None"
        )
    tokenizer = t5_tokenizer(model_config, options, request.preset.name)
    density = float(request.options.get("noise_density", 0.15))
    span = float(request.options.get("mean_noise_span_length", 3.0))
    max_len = model_config.max_seq_len - 1  # the corrupted input adds at most eos
    train = m30k.monolingual_examples(
        tokenizer, "train", root=options.root, limit=options.limit, max_len=max_len
    )
    val = m30k.monolingual_examples(
        tokenizer, "val", root=options.root, limit=options.val_limit, max_len=max_len
    )
    m30k.save_run_files(train_config.out_dir, tokenizer, (), "span_corruption")

    def collate(examples: list[list[int]], generator: Any) -> dict[str, Any]:
        corrupt = SpanCorruptionCollator(
            model_config.sentinel_ids, eos_token_id=model_config.eos_token_id, pad_token_id=model_config.pad_token_id,
            noise_density=density, mean_noise_span_length=span, seed=m30k.draw_seed(generator),
        )  # fmt: skip
        return corrupt(examples)

    return (m30k.RandomBatches(train, train_config.batch_size, collate),
            m30k.FixedBatches(val, train_config.batch_size, collate))  # fmt: skip
