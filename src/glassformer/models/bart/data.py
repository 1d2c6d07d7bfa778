"""``glassformer train bart-multi30k``'s data: Multi30k translation, and BART's denoising on the same text.

The tokenizer is the joint en+de BPE of ``glassformer.data.multi30k`` laid out as BART's vocabulary:
``<s>``, ``<pad>``, ``</s>`` on the config's ids (0, 1, 2), ``<unk>`` next, ``<mask>`` on the top id.
Every text is framed ``<s> ... </s>``; the model shifts the labels behind ``</s>``
(``decoder_start_token_id``) for its decoder, as transformers' BART does.

* ``multi30k_translation``: source -> target, ``data.direction`` ``en-de`` (default) or ``de-en``;
* ``multi30k_denoising``: both sides of the training text, noised with text infilling (30% in
  Poisson(3) spans, one ``<mask>`` each) and sentence permutation (``glassformer.data.denoising``).
"""

from __future__ import annotations

from typing import Any

from glassformer.data import multi30k as m30k
from glassformer.data.denoising import DenoisingCollator
from glassformer.models.bart.config import BartConfig
from glassformer.registry import DataRequest
from glassformer.tokenizers import ByteLevelBPE

DIRECTIONS = ("en-de", "de-en")


def bart_layout(config: BartConfig) -> m30k.SpecialLayout:
    """BART's special tokens where ``config`` puts them, ``<mask>`` last."""
    ids = {"<s>": config.bos_token_id, "<pad>": config.pad_token_id, "</s>": config.eos_token_id}
    low = m30k.low_specials(ids, "BartConfig bos/pad/eos")
    if config.decoder_start_token_id not in ids.values():
        raise ValueError(f"BartConfig.decoder_start_token_id={config.decoder_start_token_id} is none of <s>/<pad>/</s> "
                         f"({config.bos_token_id}, {config.pad_token_id}, {config.eos_token_id}); BART starts from </s>")  # fmt: skip
    roles = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
    return m30k.SpecialLayout(low, ("<mask>",), roles, framing=("<s>", "A", "</s>"))


def bart_tokenizer(
    config: BartConfig, options: m30k.Multi30kOptions, preset_name: str = "bart"
) -> ByteLevelBPE:
    """The Multi30k BPE that fits ``config`` (vocabulary size and special ids checked)."""
    layout = bart_layout(config)
    m30k.check_room(layout, config.vocab_size, preset_name, lambda n: f"model.vocab_size={n}")
    return m30k.multi30k_tokenizer(layout, config.vocab_size, root=options.root, limit=options.limit)


def multi30k_translation(
    train_config: Any, model_config: BartConfig, request: DataRequest
) -> tuple[Any, Any]:
    """``<s> source </s>`` -> ``<s> target </s>`` batches (``input_ids``, ``attention_mask``, ``labels``)."""
    options = m30k.Multi30kOptions.read(request.options, request.preset.name, ("direction",), DIRECTIONS)
    tokenizer = bart_tokenizer(model_config, options, request.preset.name)
    common = dict(root=options.root, max_len=model_config.max_seq_len)
    train = m30k.translation_examples(tokenizer, (options.direction,), "train", limit=options.limit, **common)
    val = m30k.translation_examples(tokenizer, (options.direction,), "val", limit=options.val_limit, **common)
    m30k.save_run_files(train_config.out_dir, tokenizer, (options.direction,), "translation")

    def collate(examples: list[Any], generator: Any) -> dict[str, Any]:
        return m30k.seq2seq_batch(examples, model_config.pad_token_id)

    return (m30k.RandomBatches(train, train_config.batch_size, collate),
            m30k.FixedBatches(val, train_config.batch_size, collate))  # fmt: skip


def multi30k_denoising(train_config: Any, model_config: BartConfig, request: DataRequest) -> tuple[Any, Any]:
    """BART pretraining on the English and German training sentences. Options: ``root``, ``limit``,
    ``val_limit``, ``mask_ratio`` (0.3), ``poisson_lambda`` (3) and ``permute_sentences`` (true)."""
    extra = ("mask_ratio", "poisson_lambda", "permute_sentences")
    options = m30k.Multi30kOptions.read(request.options, request.preset.name, extra)
    tokenizer = bart_tokenizer(model_config, options, request.preset.name)
    noise = {k: request.options[k] for k in extra if k in request.options}
    max_len = model_config.max_seq_len - 2  # room for <s> and </s>
    train = m30k.monolingual_examples(
        tokenizer, "train", root=options.root, limit=options.limit, max_len=max_len
    )
    val = m30k.monolingual_examples(
        tokenizer, "val", root=options.root, limit=options.val_limit, max_len=max_len
    )
    m30k.save_run_files(train_config.out_dir, tokenizer, (), "denoising")

    def collate(examples: list[list[int]], generator: Any) -> dict[str, Any]:
        noiser = DenoisingCollator.from_tokenizer(
            tokenizer, vocab_size=model_config.vocab_size, max_seq_len=model_config.max_seq_len,
            seed=m30k.draw_seed(generator), **noise,
        )  # fmt: skip
        return noiser(examples)

    return (m30k.RandomBatches(train, train_config.batch_size, collate),
            m30k.FixedBatches(val, train_config.batch_size, collate))  # fmt: skip
