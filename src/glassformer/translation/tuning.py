"""Tune beam search's length penalty on the validation split: the one decoding knob BLEU is sensitive to.

Beam search scores a finished hypothesis ``sum(log p) / length ** alpha``. With ``alpha = 0`` short
outputs win (every token costs log-probability), BLEU's brevity penalty then punishes them; a
large ``alpha`` lets beams run on. The best ``alpha`` depends on the model, so it is chosen on
``val`` and only then applied once to the test split (choosing it on test would report a score
tuned to the very sentences it measures).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from glassformer.translation.translate import BleuReport, score_bleu

DEFAULT_PENALTIES = (0.6, 0.8, 1.0, 1.2)


@dataclass
class LengthPenaltySweep:
    """Corpus BLEU at each length penalty, and the winner (ties go to the penalty nearest 1.0)."""

    best: float
    scores: dict[float, float]
    reports: dict[float, BleuReport]
    split: str
    direction: str
    num_beams: int

    def table(self) -> list[dict[str, float]]:
        """One row per penalty: ``length_penalty``, ``bleu``, ``brevity_penalty``, ``sys_len``, ``ref_len``."""
        return [{"length_penalty": p, "bleu": round(r.bleu.score, 2), "brevity_penalty": round(r.bleu.brevity_penalty, 4),
                 "sys_len": r.bleu.sys_len, "ref_len": r.bleu.ref_len} for p, r in self.reports.items()]  # fmt: skip


def sweep_length_penalty(
    model: nn.Module, tokenizer: Any, penalties: Sequence[float] = DEFAULT_PENALTIES, *, split: str = "val",
    direction: str = "en-de", num_beams: int = 4, **options: Any,
) -> LengthPenaltySweep:  # fmt: skip
    """Beam-search ``split`` once per length penalty and score each with corpus BLEU (``score_bleu``).

    ``options`` go to :func:`~glassformer.translation.score_bleu` (``limit``, ``directions``,
    ``max_new_tokens``, ``batch_size`` ...). The split defaults to ``val``; ``test`` warns.
    """
    values = [float(p) for p in penalties]
    if not values:
        raise ValueError("no length penalties to try: give at least one (e.g. 0.6, 0.8, 1.0, 1.2)")
    if len(set(values)) != len(values):
        raise ValueError(f"length penalties {values} repeat a value; give each once")
    if split == "test":
        warnings.warn("tuning the length penalty on the test split makes its test score optimistic; "
                      "tune on val and score test once", UserWarning, stacklevel=2)  # fmt: skip
    reports = {
        p: score_bleu(model, tokenizer, split=split, direction=direction, strategy="beam", num_beams=num_beams,
                      length_penalty=p, **options)
        for p in values
    }  # fmt: skip
    scores = {p: r.bleu.score for p, r in reports.items()}
    best = max(values, key=lambda p: (scores[p], -abs(p - 1.0)))
    return LengthPenaltySweep(best, scores, reports, split, direction, num_beams)
