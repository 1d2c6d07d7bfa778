"""BART's denoising objective (Lewis et al. 2019, section 2.2): corrupt a text, train to restore it.

Two of the paper's noising functions, the pair its best models use:

* **sentence permutation**: the document is split after each sentence-ending token and the
  sentences shuffled;
* **text infilling**: a share ``mask_ratio`` (0.3) of the tokens is covered by spans whose lengths
  are drawn from Poisson(``poisson_lambda`` = 3); each span becomes *one* mask token, so the model
  must also recover how many tokens are missing. A span of length 0 inserts a mask where nothing
  is missing.

The number masked is ``n * mask_ratio`` rounded up or down at random (unbiased, so the share over
many samples is ``mask_ratio``); span lengths are drawn until they cover it and the last one is
cut to fit. Spans are placed among the tokens that stay, uniformly, so unmasked tokens keep their
order and none is lost. At most as many spans as masked tokens are kept (surplus zero-length ones
are dropped), so the noised text is never longer than the original: a source that fits
``max_seq_len`` still fits after noising.

:class:`DenoisingCollator` turns a list of token-id lists into a batch: ``input_ids`` (``<s>`` +
noised + ``</s>``, right-padded), ``attention_mask`` and ``labels`` (``<s>`` + original + ``</s>``,
-100 after the end). The BART model shifts ``labels`` right after ``</s>`` for its decoder.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100  # the label every loss skips (glassformer.models.base.IGNORE_INDEX)
SENTENCE_END_TOKENS = (".", "!", "?")


def split_sentences(tokens: Sequence[int], sentence_end_ids: Collection[int]) -> list[list[int]]:
    """Cut after each sentence-ending token; text after the last one is a sentence too."""
    sentences: list[list[int]] = [[]]
    for token in tokens:
        sentences[-1].append(int(token))
        if token in sentence_end_ids:
            sentences.append([])
    return [s for s in sentences if s]


def permute_sentences(
    tokens: Sequence[int], sentence_end_ids: Collection[int], rng: np.random.Generator
) -> list[int]:
    """The sentences of ``tokens`` in a random order (the same tokens, each sentence intact)."""
    sentences = split_sentences(tokens, sentence_end_ids)
    order = rng.permutation(len(sentences))
    return [t for i in order for t in sentences[i]]


def span_lengths(n_mask: int, rng: np.random.Generator, poisson_lambda: float = 3.0) -> list[int]:
    """Poisson span lengths summing to ``n_mask`` (the last one cut), at most ``n_mask`` of them."""
    lengths: list[int] = []
    total = 0
    while total < n_mask:
        length = int(rng.poisson(poisson_lambda))
        lengths.append(min(length, n_mask - total))
        total += lengths[-1]
    while len(lengths) > n_mask:  # only zero-length spans can be surplus: each other one masks >= 1 token
        lengths.remove(0)
    return lengths


def text_infilling(
    tokens: Sequence[int],
    mask_token_id: int,
    rng: np.random.Generator,
    *,
    mask_ratio: float = 0.3,
    poisson_lambda: float = 3.0,
) -> list[int]:
    """``tokens`` with Poisson-length spans (``mask_ratio`` of the tokens) each replaced by one mask."""
    n = len(tokens)
    n_mask = int(np.floor(n * mask_ratio + rng.random()))  # unbiased rounding
    lengths = span_lengths(n_mask, rng, poisson_lambda)
    kept = n - n_mask
    gaps = np.sort(rng.integers(0, kept + 1, size=len(lengths)))  # the kept token each span comes before
    out: list[int] = []
    pos, span = 0, 0
    for gap in range(kept + 1):
        while span < len(lengths) and gaps[span] == gap:
            out.append(mask_token_id)
            pos += lengths[span]  # the span's tokens are dropped
            span += 1
        if gap < kept:
            out.append(int(tokens[pos]))
            pos += 1
    return out


class DenoisingCollator:
    """Batches for BART's denoising pretraining from lists of token ids (without ``<s>``/``</s>``).

    ``seed`` makes the noise reproducible: two collators with the same seed, fed the same examples
    in the same order, give the same batches. ``sentence_end_ids`` empty (or
    ``permute_sentences=False``) turns sentence permutation off.
    """

    def __init__(
        self,
        *,
        mask_token_id: int,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        max_seq_len: int = 1024,
        vocab_size: int | None = None,
        mask_ratio: float = 0.3,
        poisson_lambda: float = 3.0,
        permute_sentences: bool = True,
        sentence_end_ids: Collection[int] = (),
        seed: int = 0,
    ) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio={mask_ratio}: must be in [0, 1) (BART uses 0.3)")
        if poisson_lambda <= 0:
            raise ValueError(f"poisson_lambda={poisson_lambda}: must be > 0 (BART uses 3)")
        if max_seq_len < 3:
            raise ValueError(f"max_seq_len={max_seq_len}: needs room for <s>, one token and </s>")
        self.mask_token_id, self.pad_token_id = mask_token_id, pad_token_id
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.max_seq_len, self.vocab_size = max_seq_len, vocab_size
        self.mask_ratio, self.poisson_lambda = mask_ratio, poisson_lambda
        self.sentence_end_ids = frozenset(sentence_end_ids) if permute_sentences else frozenset()
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, *, vocab_size: int | None = None, **kwargs: Any
    ) -> DenoisingCollator:
        """Special ids from a glassformer tokenizer (``<mask>`` must be one of its tokens); ``vocab_size``
        (the model's) is checked against the tokenizer's. Sentence ends are its ``.``, ``!`` and ``?``."""
        if vocab_size is not None and tokenizer.vocab_size > vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is {vocab_size}; "
                f"build the model with vocab_size={tokenizer.vocab_size}"
            )
        mask = tokenizer.token_to_id("<mask>")
        if mask is None:
            raise ValueError(
                "the tokenizer has no '<mask>' token; train it with '<mask>' among its special tokens"
            )
        ids: dict[str, Any] = {"mask_token_id": mask, "vocab_size": vocab_size or tokenizer.vocab_size}
        for role in ("pad", "bos", "eos"):
            value = getattr(tokenizer, f"{role}_token_id", None)
            if value is not None:
                ids[f"{role}_token_id"] = value
        ends = [tokenizer.token_to_id(t) for t in SENTENCE_END_TOKENS]
        ids["sentence_end_ids"] = [i for i in ends if i is not None]
        return cls(**{**ids, **kwargs})

    def _check(self, index: int, tokens: Sequence[int]) -> None:
        if len(tokens) == 0:
            raise ValueError(f"example {index} is empty; drop empty lines before batching")
        if len(tokens) + 2 > self.max_seq_len:
            raise ValueError(
                f"example {index} has {len(tokens)} tokens, {len(tokens) + 2} with <s> and </s>, but "
                f"max_seq_len={self.max_seq_len}; split or truncate it first"
            )
        if self.mask_token_id in tokens:
            raise ValueError(
                f"example {index} already holds the mask token {self.mask_token_id}; it must be clean text"
            )
        if self.vocab_size is not None and (min(tokens) < 0 or max(tokens) >= self.vocab_size):
            raise ValueError(
                f"example {index} holds token ids in [{min(tokens)}, {max(tokens)}] outside the vocabulary of "
                f"{self.vocab_size}; was it tokenized with another tokenizer?"
            )

    def noise(self, tokens: Sequence[int]) -> list[int]:
        """One example's corrupted version: sentences permuted, then spans infilled."""
        permuted = (
            permute_sentences(tokens, self.sentence_end_ids, self.rng)
            if self.sentence_end_ids
            else list(tokens)
        )
        return text_infilling(
            permuted,
            self.mask_token_id,
            self.rng,
            mask_ratio=self.mask_ratio,
            poisson_lambda=self.poisson_lambda,
        )

    def __call__(self, examples: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        """``input_ids``/``attention_mask`` ``(B, S)`` and ``labels`` ``(B, T)``, each row ``<s> ... </s>``."""
        if len(examples) == 0:
            raise ValueError("no examples to collate")
        sources, targets = [], []
        for index, tokens in enumerate(examples):
            tokens = [int(t) for t in tokens]
            self._check(index, tokens)
            sources.append([self.bos_token_id, *self.noise(tokens), self.eos_token_id])
            targets.append([self.bos_token_id, *tokens, self.eos_token_id])
        input_ids = _pad(sources, self.pad_token_id)  # (B, S)
        lengths = torch.tensor([len(s) for s in sources])
        attention_mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()  # (B, S)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": _pad(targets, IGNORE_INDEX),
        }


def _pad(rows: list[list[int]], value: int) -> Tensor:
    """Right-pad ragged rows into one ``(B, longest)`` tensor."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
