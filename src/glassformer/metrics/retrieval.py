"""Recall@k for cross-modal retrieval where several items may share one caption, and its chance level.

A query (a caption, or a picture) scores every item of the other side; it is a hit at ``k`` when
any of its ``k`` best items carries the query's id. With ids instead of "the diagonal", a caption
that describes three pictures is right on any of them, which is what "retrieved the right
picture" means once captions repeat. Chance is the same recall for a ranking drawn at random:
a query whose id ``m`` of the ``N`` items share hits in its top ``k`` with probability
``1 - C(N - m, k) / C(N, k)``; at ``k = 1`` that is ``m / N``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _check(scores: Tensor, query_ids: Tensor, item_ids: Tensor) -> None:
    if scores.dim() != 2 or scores.shape != (len(query_ids), len(item_ids)):
        raise ValueError(
            f"scores must be (queries, items) = ({len(query_ids)}, {len(item_ids)}), got {tuple(scores.shape)}: "
            "row i scores query i against every item"
        )


def recall_at_k(
    scores: Tensor, query_ids: Tensor, item_ids: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """The share of queries with an item of their own id among their ``k`` best-scored items, per ``k``."""
    _check(scores, query_ids, item_ids)
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # (Q, K)
    hits = item_ids.to(top.device)[top] == query_ids.to(top.device)[:, None]  # (Q, K)
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def chance_recall_at_k(
    query_ids: Tensor, item_ids: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k of a random ranking, averaged over the queries (``m / N`` at ``k = 1``)."""
    n = len(item_ids)
    matches = (query_ids[:, None] == item_ids[None, :]).sum(dim=1).double()  # (Q,): m per query
    out = {}
    for k in ks:
        k = min(k, n)
        j = torch.arange(k, dtype=torch.float64)  # C(N-m, k) / C(N, k) = prod_j (N - m - j) / (N - j)
        miss = ((n - matches[:, None] - j).clamp(min=0) / (n - j)).prod(dim=1)
        out[k] = (1 - miss).mean().item()
    return out


def retrieval_table(
    image_embeds: Tensor, text_embeds: Tensor, ids: Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[int, float]]:
    """Text->image and image->text recall@k of paired embeddings (row i of each is pair i, ``ids`` its
    caption id), with the chance level beside them (the same for both ways: one id list)."""
    if image_embeds.shape[0] != text_embeds.shape[0] or len(ids) != image_embeds.shape[0]:
        raise ValueError(
            f"{image_embeds.shape[0]} images, {text_embeds.shape[0]} texts and {len(ids)} ids: give one of each per pair"
        )
    sim = text_embeds.float() @ image_embeds.float().T  # (texts, images)
    return {
        "t2i": recall_at_k(sim, ids, ids, ks),
        "i2t": recall_at_k(sim.T, ids, ids, ks),
        "chance": chance_recall_at_k(ids, ids, ks),
    }
