"""The translation data lessons 07 and 08 train on: Multi30k's first pairs, else a generated task.

With the shared data present (``GLASSFORMER_DATA`` holding ``multi30k/task1/raw``), the pairs are
Multi30k's English-German captions and the tokenizer is the joint BPE of
``glassformer.data.multi30k``, learned once on the slice and cached. Without it a generated task
stands in, so the lessons run anywhere: a "sentence" of made-up words and its "translation", the
same words in reverse order with each word respelled, with a BPE learned on them by the same code.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from glassformer.data import multi30k as m30k
from glassformer.models.transformer.config import TransformerConfig
from glassformer.models.transformer.data import transformer_layout
from glassformer.tokenizers import ByteLevelBPE

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "zi", "be", "do", "fu", "gi")


@dataclass
class TranslationData:
    """A joint tokenizer, framed training pairs ``(source ids, target ids)``, held-out sentence pairs."""

    tokenizer: ByteLevelBPE
    train: list[tuple[list[int], list[int]]]
    val: list[tuple[str, str]]
    name: str
    on_multi30k: bool


def _generated_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs of the stand-in task: 3-7 words of two syllables; the target reverses the words
    and swaps each word's syllables ("kalo mine" -> "neme loka"), so a model must reorder and map."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = [(rng.choice(SYLLABLES), rng.choice(SYLLABLES)) for _ in range(rng.randint(3, 7))]
        source = " ".join(a + b for a, b in words).capitalize() + "."
        target = " ".join(b + a for a, b in reversed(words)).capitalize() + "."
        pairs.append((source, target))
    return pairs


def translation_data(config: TransformerConfig, n_train: int, n_val: int) -> TranslationData:
    """Multi30k en-de (the first ``n_train`` training pairs, the first ``n_val`` of val), or the
    generated task; the tokenizer has ``config.vocab_size`` ids with the Transformer's specials."""
    layout = transformer_layout(config)
    try:
        tokenizer = m30k.multi30k_tokenizer(layout, config.vocab_size, limit=n_train)
        train = m30k.translation_examples(tokenizer, ("en-de",), "train", root=None, limit=n_train,
                                          max_len=config.max_seq_len)  # fmt: skip
        val = m30k.load_pairs("val", "en-de", limit=n_val)
        return TranslationData(tokenizer, train, val, f"Multi30k en-de (first {n_train} pairs)", True)
    except FileNotFoundError as missing:
        print(f"({missing}\n using a generated reorder-and-respell task instead)")
    pairs = _generated_pairs(n_train + n_val, seed=0)
    texts = [side for pair in pairs[:n_train] for side in pair]
    merges = m30k.learn_merges(texts, layout.ordinary_room(config.vocab_size) - m30k.BYTE_TOKENS).merges
    tokenizer = m30k.assemble_tokenizer(merges, layout, config.vocab_size)
    train, _ = m30k.encode_pairs(tokenizer, pairs[:n_train], max_len=config.max_seq_len)
    return TranslationData(
        tokenizer, train, pairs[n_train:], "a generated task (words reversed and respelled)", False
    )
