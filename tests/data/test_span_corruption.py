"""T5 span corruption: exact reconstruction, T5's lengths, the settings' statistics, seeded replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer import registry
from glassformer.data.span_corruption import (
    SpanCorruptionCollator,
    compute_input_and_target_lengths,
    corrupt,
    noise_span_counts,
    random_spans_noise_mask,
    sentinel_ids_from_tokenizer,
    sentinel_tokens,
    sentinels_from_top,
    split_into_pieces,
    uncorrupt,
)
from glassformer.models.base import IGNORE_INDEX

VOCAB, EOS, PAD = 1000, 1, 0
SENTINELS = sentinels_from_top(VOCAB, 100)


def _sequences(n: int, seed: int = 0, low: int = 2, high: int = 200) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, VOCAB - 100, size=int(rng.integers(low, high))).tolist() for _ in range(n)]


def _spans(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def test_input_and_target_reconstruct_the_original_exactly() -> None:
    collator = SpanCorruptionCollator(SENTINELS, eos_token_id=EOS, pad_token_id=PAD, seed=3)
    for ids in _sequences(300):
        inputs, targets = collator.corrupt_one(ids)
        assert uncorrupt(inputs, targets, SENTINELS, EOS) == ids
        noise, spans = noise_span_counts(len(ids), 0.15, 3.0)
        spans = min(spans, len(ids) - noise)
        assert len(inputs) == len(ids) - noise + spans + 1 and len(targets) == noise + spans + 1
        assert inputs[-1] == targets[-1] == EOS
        used = [t for t in targets if t in SENTINELS]
        assert used == list(SENTINELS[: len(used)])  # <extra_id_0>, <extra_id_1>, ... = top id, top - 1, ...


def test_worked_example() -> None:
    """The docstring's sentence, with its mask: the sentinels and eos land where T5 puts them."""
    ids = list(range(10, 21))
    mask = np.zeros(11, dtype=bool)
    mask[[2, 3, 8]] = True
    inputs, targets = corrupt(ids, mask, SENTINELS, EOS)
    assert inputs == [10, 11, 999, 14, 15, 16, 17, 998, 19, 20, EOS]
    assert targets == [999, 12, 13, 998, 18, EOS]


def test_lengths_are_t5s() -> None:
    """T5's own numbers: 512-token inputs come from 568 raw tokens and have 114-token targets (the flax example)."""
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    assert compute_input_and_target_lengths(128, 0.15, 3.0) == (141, 29)  # 141 - 21 + 7 + 1 = 128
    assert noise_span_counts(100, 0.15, 3.0) == (15, 5)
    assert noise_span_counts(2, 0.15, 3.0) == (1, 1)  # at least one noise token and one kept


@pytest.mark.parametrize("inputs_length", [64, 100, 512])
def test_pieces_of_the_raw_length_fill_the_inputs_exactly(inputs_length: int) -> None:
    raw, targets_length = compute_input_and_target_lengths(inputs_length)
    stream = np.random.default_rng(0).integers(2, VOCAB - 100, size=raw * 8).tolist()
    batch = SpanCorruptionCollator(SENTINELS, seed=1)(split_into_pieces(stream, raw))
    assert batch["input_ids"].shape == (8, inputs_length)
    assert batch["labels"].shape == (8, targets_length)
    assert bool(batch["attention_mask"].all()) and not bool((batch["labels"] == IGNORE_INDEX).any())


def test_masked_fraction_and_span_lengths_match_the_settings() -> None:
    """Over 4,000 sequences of 20-300 tokens: 15% noise, spans of mean 3 that vary, spread evenly."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 300, size=4000)
    masks = [random_spans_noise_mask(int(n), 0.15, 3.0, rng) for n in lengths]
    spans = np.array([s for m in masks for s in _spans(m)])
    noise = sum(int(m.sum()) for m in masks)
    assert abs(noise / lengths.sum() - 0.15) < 0.002
    assert abs(spans.mean() - 3.0) < 0.1
    assert spans.min() == 1 and spans.max() >= 8 and spans.std() > 1.0  # random segmentation, not fixed 3s
    # T5's layout alternates kept and noise spans, starting with kept: the first token is never
    # noise and the last always is; in between, noise is as likely in the second quarter as in the third
    assert not any(m[0] for m in masks) and all(m[-1] for m in masks)
    quarters = [np.mean([m[q * len(m) // 4 : (q + 1) * len(m) // 4].mean() for m in masks]) for q in (1, 2)]
    assert abs(quarters[0] - quarters[1]) < 0.01


@pytest.mark.parametrize(("density", "span"), [(0.3, 5.0), (0.5, 2.0)])
def test_other_settings_hold_too(density: float, span: float) -> None:
    rng = np.random.default_rng(1)
    masks = [random_spans_noise_mask(200, density, span, rng) for _ in range(500)]
    spans = np.array([s for m in masks for s in _spans(m)])
    assert abs(np.mean([m.mean() for m in masks]) - density) < 0.005
    assert abs(spans.mean() - span) < 0.15


def test_batches_replay_with_a_seed() -> None:
    seqs = _sequences(6, seed=2)
    a = SpanCorruptionCollator(SENTINELS, seed=7)
    b = SpanCorruptionCollator(SENTINELS, seed=7)
    first, again = a(seqs), b(seqs)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(a(seqs)["input_ids"], first["input_ids"])  # the next call draws anew
    other = SpanCorruptionCollator(SENTINELS, seed=8)(seqs)
    assert not torch.equal(other["input_ids"], first["input_ids"])


def test_batch_layout_and_a_t5_trains_on_it() -> None:
    config = registry.get("t5-small-tiny").make_config().replace(dropout=0.0)
    seqs = [list(range(2, 40)), list(range(5, 15)), list(range(20, 50))]
    batch = SpanCorruptionCollator(config.sentinel_ids, config.eos_token_id, config.pad_token_id, seed=0)(seqs)
    lengths = batch["attention_mask"].sum(1)
    for row in range(3):
        assert (batch["input_ids"][row, lengths[row] :] == config.pad_token_id).all()
        gold = batch["labels"][row]
        real = int((gold != IGNORE_INDEX).sum())
        assert gold[real - 1] == config.eos_token_id and (gold[real:] == IGNORE_INDEX).all()
    model = registry.get("t5-small-tiny").build(config)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_bad_input_is_refused_with_the_reason() -> None:
    collator = SpanCorruptionCollator(SENTINELS)
    with pytest.raises(ValueError, match="already holds sentinel"):
        collator([[5, 6, 999, 7]])
    with pytest.raises(ValueError, match="at least 2 tokens"):
        collator([[5]])
    with pytest.raises(ValueError, match="empty batch"):
        collator([])
    with pytest.raises(ValueError, match="more noise spans than the 2 sentinels"):
        SpanCorruptionCollator((999, 998))([list(range(2, 300))])
    with pytest.raises(ValueError, match="among the sentinel ids"):
        SpanCorruptionCollator((999, 1))
    with pytest.raises(ValueError, match="noise_density"):
        SpanCorruptionCollator(SENTINELS, noise_density=1.5)


def test_sentinels_by_name_from_a_trained_tokenizer() -> None:
    """Named last among the specials, <extra_id_0> gets the top id: the two ways to find them agree."""
    from glassformer.tokenizers import train_bpe

    text = ["a man rides a bike", "ein Mann fährt Rad"] * 20
    tok = train_bpe(text, 280, special_tokens=["<pad>", "</s>", *sentinel_tokens(8)])
    assert sentinel_ids_from_tokenizer(tok) == sentinels_from_top(tok.vocab_size, 8)
    with pytest.raises(ValueError, match="8 sentinel tokens.*wanted 9"):
        sentinel_ids_from_tokenizer(tok, 9)
