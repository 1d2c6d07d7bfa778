"""Helpers the encoder-decoder families' transformers comparisons share (``tests/models/<family>/test_<family>_hf.py``).

Each of those tests decodes with a stop token the tiny random model actually produces, so rows
and beams finish early and the finished ones are compared too; transformers then pads the
finished rows, so both sides are compared without their padded tails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch


def favourite_token(rows: Iterable[Iterable[int]], skip: Iterable[int] = ()) -> int:
    """The token the rows hold most often (``skip`` aside): a stop token the model will reach."""
    left_out = set(skip)
    counts = Counter(t for row in rows for t in row if t not in left_out)
    return counts.most_common(1)[0][0]


def strip_tails(rows: Iterable[Iterable[int]], fill: set[int]) -> list[list[int]]:
    """Each row without its trailing ``fill`` tokens (the padding after a finished row)."""
    out = []
    for row in rows:
        row = list(row)
        while row and row[-1] in fill:
            row.pop()
        out.append(row)
    return out


def assert_same_tokens(ours: list[list[int]], hf_sequences: torch.Tensor, fill: set[int]) -> None:
    """Our generated rows equal transformers' ``sequences`` after its start token, tails aside."""
    assert strip_tails(ours, fill) == strip_tails(hf_sequences[:, 1:].tolist(), fill)
