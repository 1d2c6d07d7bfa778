"""Corpus BLEU (Papineni et al. 2002) with the 13a tokenizer, the score papers report.

Translation results are only comparable when everyone tokenizes and smooths the same way, so
this follows the conventions of the WMT scoring script ``mteval-v13a``: detokenized system output
and references go in, the 13a rules split punctuation, n-gram counts are clipped by the largest
count in any one reference, the brevity penalty uses the reference length closest to each
hypothesis, and a zero n-gram precision is smoothed by halving (the "exp" method). ``tests``
check the score against ``sacrebleu`` to 0.01 points.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ORDER = 4

# mteval-v13a: the symbols split off every token, then "." and "," unless between digits, then a
# dash after a digit. Applied in this order to " line " and the result re-joined on single spaces.
_SYMBOLS = re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])")
_PERIOD_COMMA_AFTER_NON_DIGIT = re.compile(r"([^0-9])([\.,])")
_PERIOD_COMMA_BEFORE_NON_DIGIT = re.compile(r"([\.,])([^0-9])")
_DASH_AFTER_DIGIT = re.compile(r"([0-9])(-)")
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def tokenize_13a(line: str) -> str:
    """Split ``line`` the way ``mteval-v13a`` does before counting n-grams."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    for entity, char in _ENTITIES:
        line = line.replace(entity, char)
    line = _SYMBOLS.sub(r" \1 ", f" {line} ")
    line = _PERIOD_COMMA_AFTER_NON_DIGIT.sub(r"\1 \2 ", line)
    line = _PERIOD_COMMA_BEFORE_NON_DIGIT.sub(r" \1 \2", line)
    line = _DASH_AFTER_DIGIT.sub(r"\1 \2 ", line)
    return " ".join(line.split())


def _ngrams(words: list[str], order: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + n]) for n in range(1, order + 1) for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class BLEUScore:
    """A corpus BLEU score with the statistics behind it (precisions in percent)."""

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    sys_len: int
    ref_len: int

    def __str__(self) -> str:
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return f"BLEU = {self.score:.2f} {p} (BP = {self.brevity_penalty:.3f} hyp_len = {self.sys_len} ref_len = {self.ref_len})"


def _check_inputs(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if isinstance(hypotheses, str):
        raise TypeError("corpus_bleu takes a list of hypothesis sentences, not one string: wrap it in a list")
    if not references:
        raise ValueError("corpus_bleu needs at least one reference stream (a list of sentences per reference)")
    for k, stream in enumerate(references):
        if isinstance(stream, str):
            raise TypeError(f"reference stream {k} is a string; pass a list of streams, each a list of sentences: [[ref1, ref2, ...]]")
        if len(stream) != len(hypotheses):
            raise ValueError(f"reference stream {k} has {len(stream)} sentences but there are {len(hypotheses)} hypotheses")


def _sentence_stats(hyp: str, refs: Sequence[str], lowercase: bool) -> tuple[list[int], list[int], int, int]:
    """Clipped matches and totals per order, the hypothesis length and the closest reference length."""
    prep = (lambda s: tokenize_13a(s.lower())) if lowercase else tokenize_13a
    words = prep(hyp).split()
    ref_words = [prep(r).split() for r in refs]
    max_ref: Counter[tuple[str, ...]] = Counter()
    for rw in ref_words:
        max_ref |= _ngrams(rw, MAX_ORDER)  # the union keeps each n-gram's largest count
    hyp_counts = _ngrams(words, MAX_ORDER)
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    for gram, count in hyp_counts.items():
        matches[len(gram) - 1] += min(count, max_ref[gram])
    for n in range(1, MAX_ORDER + 1):
        totals[n - 1] = max(len(words) - n + 1, 0)
    # the closest reference length; a tie goes to the shorter one
    closest = min((abs(len(rw) - len(words)), len(rw)) for rw in ref_words)[1]
    return matches, totals, len(words), closest


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, lowercase: bool = False) -> BLEUScore:
    """Corpus BLEU of detokenized ``hypotheses`` against one or more reference streams.

    ``references`` is a list of streams, each as long as ``hypotheses`` (``[refs]`` for one
    reference per sentence), the same layout as ``sacrebleu.corpus_bleu``.
    """
    _check_inputs(hypotheses, references)
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    sys_len = ref_len = 0
    for i, hyp in enumerate(hypotheses):
        m, t, h_len, r_len = _sentence_stats(hyp, [stream[i] for stream in references], lowercase)
        matches = [a + b for a, b in zip(matches, m)]
        totals = [a + b for a, b in zip(totals, t)]
        sys_len, ref_len = sys_len + h_len, ref_len + r_len
    return _score(matches, totals, sys_len, ref_len)


def _score(matches: list[int], totals: list[int], sys_len: int, ref_len: int) -> BLEUScore:
    bp = 0.0 if sys_len == 0 else 1.0 if sys_len >= ref_len else math.exp(1.0 - ref_len / sys_len)
    if not any(matches):  # nothing matches at any order: 0, as sacrebleu says, not a smoothed score
        return BLEUScore(0.0, (0.0,) * MAX_ORDER, bp, sys_len, ref_len)
    precisions, halving = [0.0] * MAX_ORDER, 1.0
    for n in range(MAX_ORDER):
        if totals[n] == 0:
            break  # the hypotheses are shorter than this order: the precision stays 0
        if matches[n] == 0:
            halving *= 2.0  # "exp" smoothing: each further zero precision gets half the previous pseudo-count
            precisions[n] = 100.0 / (halving * totals[n])
        else:
            precisions[n] = 100.0 * matches[n] / totals[n]
    if min(precisions) <= 0.0:
        return BLEUScore(0.0, tuple(precisions), bp, sys_len, ref_len)
    log_mean = sum(math.log(p) for p in precisions) / MAX_ORDER
    return BLEUScore(bp * math.exp(log_mean), tuple(precisions), bp, sys_len, ref_len)
