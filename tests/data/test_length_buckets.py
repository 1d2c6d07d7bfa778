"""Length-bucketed training batches: the same examples, far less padding, still reproducible."""

from __future__ import annotations

import collections
import random

import pytest
import torch

from glassformer.data.multi30k import RandomBatches, example_length


def pairs(n: int = 2000, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Sentence pairs whose target length follows the source's, as a translation's does."""
    rng = random.Random(seed)
    lengths = [rng.randint(3, 40) for _ in range(n)]
    return [([1] * s, [2] * max(1, s + rng.randint(-3, 3))) for s in lengths]


def take(examples: list, generator: torch.Generator) -> list:
    return examples


def padded_tokens(batch: list[tuple[list[int], list[int]]]) -> int:
    return len(batch) * (max(len(s) for s, _ in batch) + max(len(t) for _, t in batch))


def draw(batches: RandomBatches, step: int) -> list:
    return batches("train", step, torch.Generator().manual_seed(step))


def test_example_length_counts_rows_and_pairs() -> None:
    assert example_length([5, 6, 7]) == 3
    assert example_length(([5, 6], [7, 8, 9])) == 5


def test_buckets_cut_padding_against_plain_random_batches() -> None:
    data = pairs()
    plain, bucketed = RandomBatches(data, 64, take, buckets=1), RandomBatches(data, 64, take, buckets=8)
    real = sum(example_length(e) for step in range(50) for e in draw(bucketed, step))
    waste_plain = sum(padded_tokens(draw(plain, s)) for s in range(50))
    waste_bucketed = sum(padded_tokens(draw(bucketed, s)) for s in range(50))
    assert waste_bucketed < 0.75 * waste_plain
    assert waste_bucketed >= real


def test_every_example_stays_equally_likely() -> None:
    data = pairs(512)
    batches = RandomBatches(data, 32, take, buckets=8)
    counts = collections.Counter(id(e) for step in range(2000) for e in draw(batches, step))
    # each draw holds 32 of 512: every example about 125 times; the shortest and longest too
    shortest, longest = min(data, key=example_length), max(data, key=example_length)
    expected = 2000 * 32 / 512
    for example in (shortest, longest):
        assert 0.6 * expected < counts[id(example)] < 1.4 * expected
    assert len(counts) == len(data)


def test_a_batch_is_distinct_examples_and_the_same_on_a_second_draw() -> None:
    data = pairs(600)
    batches = RandomBatches(data, 50, take, buckets=4)
    first, again = draw(batches, 7), draw(batches, 7)
    assert [id(e) for e in first] == [id(e) for e in again]
    assert len({id(e) for e in first}) == 50


def test_few_examples_shrink_the_pool_and_zero_buckets_is_named() -> None:
    assert RandomBatches(pairs(100), 40, take, buckets=8).buckets == 2
    with pytest.raises(ValueError, match="buckets=0"):
        RandomBatches(pairs(100), 10, take, buckets=0)
