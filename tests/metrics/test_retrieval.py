"""Recall@k and its chance level against brute-force counting over every query and every ranking."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from glassformer.metrics import chance_recall_at_k, recall_at_k, retrieval_table


def _brute_recall(scores: torch.Tensor, query_ids: list[int], item_ids: list[int], k: int) -> float:
    hits = 0
    for q, row in enumerate(scores.tolist()):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        hits += any(item_ids[j] == query_ids[q] for j in order[:k])
    return hits / len(query_ids)


def _brute_chance(query_ids: list[int], item_ids: list[int], k: int) -> float:
    """Every k-subset of the items is equally likely to be the top k of a random ranking."""
    subsets = list(itertools.combinations(range(len(item_ids)), k))
    return sum(
        sum(any(item_ids[j] == q for j in s) for s in subsets) / len(subsets) for q in query_ids
    ) / len(query_ids)


def test_recall_matches_brute_force_with_repeated_ids() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (20,), generator=gen)
    scores = torch.randn(20, 20, generator=gen)
    got = recall_at_k(scores, ids, ids, ks=(1, 3, 5))
    for k in (1, 3, 5):
        assert got[k] == pytest.approx(_brute_recall(scores, ids.tolist(), ids.tolist(), k))


def test_a_shared_caption_counts_as_a_hit() -> None:
    scores = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5], [1.0, 0.0, 0.5]])  # query 0 prefers item 1
    ids = torch.tensor([7, 7, 8])  # items 0 and 1 share query 0's caption
    assert recall_at_k(scores, ids, ids, ks=(1,))[1] == pytest.approx(2 / 3)  # query 2 misses
    assert recall_at_k(scores, ids, torch.tensor([7, 9, 8]), ks=(1,))[1] == pytest.approx(0.0)


def test_chance_matches_enumeration() -> None:
    query_ids, item_ids = [0, 0, 1, 2, 2, 2, 3], [0, 0, 1, 2, 2, 2, 3]
    got = chance_recall_at_k(torch.tensor(query_ids), torch.tensor(item_ids), ks=(1, 2, 3))
    for k in (1, 2, 3):
        assert got[k] == pytest.approx(_brute_chance(query_ids, item_ids, k))
    assert got[1] == pytest.approx(sum(item_ids.count(q) for q in query_ids) / len(item_ids) / len(query_ids))


def test_table_both_ways_on_perfect_embeddings() -> None:
    ids = torch.tensor([0, 1, 1, 2])
    images = torch.eye(4)
    table = retrieval_table(images, images.clone(), ids, ks=(1,))
    assert table["t2i"][1] == table["i2t"][1] == 1.0
    assert table["chance"][1] == pytest.approx((1 + 2 + 2 + 1) / 16)
    assert math.isclose(retrieval_table(images, images.flip(0), ids, ks=(1,))["t2i"][1], 0.5)


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match="queries, items"):
        recall_at_k(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3))
