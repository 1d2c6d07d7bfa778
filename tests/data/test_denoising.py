"""BART's denoising noise: proportions, span lengths, alignment with the original, permutation, seeds, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from glassformer.data.denoising import (
    DenoisingCollator,
    permute_sentences,
    span_lengths,
    split_sentences,
    text_infilling,
)

MASK = 3


def _align(original: list[int], noised: list[int]) -> list[int]:
    """How many original tokens each mask covers, checking that every kept token is in place.

    The original's tokens are all distinct, so each kept token has one place: the kept tokens must
    appear in the original's order, and between two of them only masks stand for the skipped ones.
    """
    where = {t: i for i, t in enumerate(original)}
    covered, pos, pending = [], 0, []
    for token in noised:
        if token == MASK:
            pending.append(0)
            continue
        assert token in where, f"{token} is not an original token"
        gap = where[token] - pos
        assert gap >= 0, f"token {token} came out of order"
        assert gap == 0 or pending, f"{gap} tokens before {token} vanished without a mask"
        covered += [0] * (len(pending) - 1) + [gap] if pending else []
        pending, pos = [], where[token] + 1
    tail = len(original) - pos
    assert tail == 0 or pending, f"the last {tail} tokens vanished without a mask"
    covered += [0] * (len(pending) - 1) + [tail] if pending else []
    return covered


def _distinct(rng: np.random.Generator, n: int) -> list[int]:
    return (rng.permutation(10_000)[:n] + 10).tolist()


def test_infilling_masks_thirty_percent_and_never_loses_or_reorders_tokens() -> None:
    rng = np.random.default_rng(0)
    masked = total = masks = 0
    for _ in range(2000):
        original = _distinct(rng, int(rng.integers(1, 60)))
        noised = text_infilling(original, MASK, rng)
        covered = _align(original, noised)
        assert len(noised) <= len(original)
        masked += sum(covered)
        total += len(original)
        masks += noised.count(MASK)
        assert len(noised) - noised.count(MASK) == len(original) - sum(covered)
    assert abs(masked / total - 0.3) < 0.01, masked / total
    assert masks > 0


def test_span_lengths_are_poisson_three_and_zero_length_spans_insert_masks() -> None:
    rng = np.random.default_rng(1)
    lengths = [length for _ in range(3000) for length in span_lengths(200, rng)[:-1]]  # the last one is cut
    counts = Counter(lengths)
    assert abs(np.mean(lengths) - 3.0) < 0.1
    assert abs(counts[0] / len(lengths) - np.exp(-3.0)) < 0.01  # P(0) of Poisson(3): about 5%
    assert sum(span_lengths(17, rng)) == 17
    inserted = 0
    for _ in range(300):  # a zero-length span shows as a mask between two tokens that were neighbours
        original = _distinct(rng, 40)
        inserted += sum(1 for c in _align(original, text_infilling(original, MASK, rng)) if c == 0)
    assert inserted > 0


def test_permutation_keeps_the_multiset_of_sentences() -> None:
    rng = np.random.default_rng(2)
    ends = {4, 5}
    doc = [10, 11, 4, 12, 5, 13, 14, 15, 4, 16, 17]  # four sentences, the last without an end token
    orders = set()
    for _ in range(50):
        out = permute_sentences(doc, ends, rng)
        assert sorted(map(tuple, split_sentences(doc, ends))) == sorted(
            map(tuple, _sentences_of(out, doc, ends))
        )
        orders.add(tuple(out))
    assert len(orders) > 5  # it does shuffle


def _sentences_of(out: list[int], doc: list[int], ends: set[int]) -> list[list[int]]:
    """Cut ``out`` at the lengths of its sentences (the unterminated one may land mid-text)."""
    pieces, pos = [], 0
    originals = {tuple(s) for s in split_sentences(doc, ends)}
    while pos < len(out):
        piece = next(list(s) for s in originals if tuple(out[pos : pos + len(s)]) == s)
        pieces.append(piece)
        pos += len(piece)
    return pieces


def test_collator_batch_layout_and_seed() -> None:
    examples = [list(range(10, 40)), list(range(50, 60)), [70]]
    kwargs = dict(mask_token_id=MASK, max_seq_len=64, sentence_end_ids=(20, 55), seed=7)
    a, b = DenoisingCollator(**kwargs)(examples), DenoisingCollator(**kwargs)(examples)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(a[key], b[key]), key
    other = DenoisingCollator(**{**kwargs, "seed": 8})(examples)
    assert not torch.equal(a["input_ids"], other["input_ids"])
    assert a["labels"][1].tolist() == [0, *range(50, 60), 2] + [-100] * 20
    lengths = a["attention_mask"].sum(-1)
    for row in range(3):
        ids = a["input_ids"][row]
        assert ids[0] == 0 and ids[lengths[row] - 1] == 2 and ids[lengths[row] :].eq(1).all()


def test_collator_refuses_bad_examples() -> None:
    collate = DenoisingCollator(mask_token_id=MASK, max_seq_len=8, vocab_size=100)
    with pytest.raises(ValueError, match="example 1 is empty"):
        collate([[10], []])
    with pytest.raises(ValueError, match=r"example 0 has 7 tokens, 9 with <s> and </s>, but max_seq_len=8"):
        collate([list(range(10, 17))])
    with pytest.raises(ValueError, match="already holds the mask token 3"):
        collate([[10, MASK]])
    with pytest.raises(ValueError, match=r"token ids in \[10, 120\] outside the vocabulary of 100"):
        collate([[10, 120]])


class _Tokenizer:
    vocab_size = 300
    pad_token_id, bos_token_id, eos_token_id = 1, 0, 2

    def token_to_id(self, token: str) -> int | None:
        return {"<mask>": 4, ".": 9}.get(token)


def test_from_tokenizer_reads_special_ids_and_checks_the_vocabulary() -> None:
    collate = DenoisingCollator.from_tokenizer(_Tokenizer(), vocab_size=300, max_seq_len=32)
    assert collate.mask_token_id == 4 and collate.sentence_end_ids == {9}
    with pytest.raises(ValueError, match="tokenizer has 300 tokens but the model's vocab_size is 64"):
        DenoisingCollator.from_tokenizer(_Tokenizer(), vocab_size=64)
