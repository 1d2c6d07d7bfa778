"""Word error rate, and the text normalisation that makes two transcripts comparable.

A recogniser that writes "5" where the reference says "five", or "Hello," for "hello", has made
no mistake a listener would notice; scored on raw strings both would count as substitutions and
WER would measure spelling conventions instead of recognition. :func:`normalize_text` therefore
maps every transcript to one canonical form before words are compared:

1. lower-case (Unicode ``casefold``);
2. apostrophes are dropped inside words ("don't" -> "dont"), so both spellings agree;
3. a number with thousands separators loses them ("1,000" -> "1000") and a decimal point is read
   as "point" followed by the digits one by one ("3.14" -> "three point one four");
4. every other character that is not a letter or a digit becomes a space ("forty-two" -> "forty
   two", "end." -> "end");
5. each run of digits is written in words: "5" -> "five", "42" -> "forty two", "1999" -> "one
   thousand nine hundred ninety nine" (no "and"). A run with a leading zero, or longer than 15
   digits, is a code rather than an amount and is read digit by digit ("007" -> "zero zero
   seven"); digits glued to letters are split from them ("4th" -> "four th");
6. whitespace is collapsed to single spaces and stripped.

:func:`wer` is corpus WER, as ``jiwer.wer`` computes it: the word-level Levenshtein distances
(substitutions + deletions + insertions, each costing 1) summed over all pairs, divided by the
total number of reference words. It does not normalise; call :func:`normalize_text` on both sides
first (``wer(map(normalize_text, refs), ...)``) or use :func:`normalized_wer`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
MAX_AMOUNT_DIGITS = 15

_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_SEPARATED_THOUSANDS = re.compile(r"(?<!\d)\d{1,3}(?:,\d{3})+(?!\d)")
_DECIMAL = re.compile(r"(?<=\d)\.(\d+)")
_NOT_WORD = re.compile(r"[^\w]|_")
_DIGITS = re.compile(r"\d+")


def _below_thousand(n: int) -> list[str]:
    """Words for 0 < n < 1000 ("three hundred forty two")."""
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(TENS[tens])
        if ones:
            words.append(ONES[ones])
    elif rest:
        words.append(ONES[rest])
    return words


def number_words(n: int) -> str:
    """A non-negative integer below 10**15 in English words: 42 -> "forty two"."""
    if not 0 <= n < 10**MAX_AMOUNT_DIGITS:
        raise ValueError(f"number_words takes 0 <= n < 10**{MAX_AMOUNT_DIGITS}, got {n}")
    if n == 0:
        return ONES[0]
    words: list[str] = []
    for scale, name in SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_below_thousand(count), name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def _digits_as_words(match: re.Match[str]) -> str:
    digits = match.group(0)
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > MAX_AMOUNT_DIGITS:
        return " " + " ".join(ONES[int(d)] for d in digits) + " "
    return " " + number_words(int(digits)) + " "


def normalize_text(text: str) -> str:
    """The canonical form of a transcript (rules in the module docstring): "I have 5 Cats!" -> "i have five cats"."""
    if not isinstance(text, str):
        raise TypeError(f"normalize_text takes a string, got {type(text).__name__}")
    text = _APOSTROPHE.sub("", text.casefold())
    text = _SEPARATED_THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DECIMAL.sub(lambda m: " point " + " ".join(ONES[int(d)] for d in m.group(1)) + " ", text)
    text = _NOT_WORD.sub(" ", text)
    text = _DIGITS.sub(_digits_as_words, text)
    return " ".join(text.split())


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word lists (unit cost for substitution, deletion, insertion).

    One row of the dynamic-programming table at a time: ``row[j]`` is the distance between the
    reference prefix read so far and ``hypothesis[:j]``.
    """
    row = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hypothesis, start=1):
            substitute = diagonal + (ref_word != hyp_word)
            diagonal = row[j]
            row[j] = min(substitute, row[j] + 1, row[j - 1] + 1)
    return row[-1]


def _as_list(texts: str | Iterable[str], name: str) -> list[str]:
    items = [texts] if isinstance(texts, str) else list(texts)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{name}[{i}] is a {type(item).__name__}; WER compares strings of words")
    return items


def wer(references: str | Iterable[str], hypotheses: str | Iterable[str]) -> float:
    """Corpus word error rate: total word edits / total reference words (words split on whitespace).

    A single string counts as a corpus of one transcript. Raises ``ValueError`` when the two
    lists differ in length or the references hold no word at all (the rate would be undefined).
    """
    refs, hyps = _as_list(references, "references"), _as_list(hypotheses, "hypotheses")
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses; WER pairs them one to one")
    edits = words = 0
    for ref, hyp in zip(refs, hyps):
        ref_words = ref.split()
        edits += edit_distance(ref_words, hyp.split())
        words += len(ref_words)
    if words == 0:
        raise ValueError("the references hold no words, so WER is undefined; pass at least one non-empty reference")
    return edits / words


def normalized_wer(references: str | Iterable[str], hypotheses: str | Iterable[str]) -> float:
    """:func:`wer` after :func:`normalize_text` on both sides: the number every speech result here reports."""
    refs, hyps = _as_list(references, "references"), _as_list(hypotheses, "hypotheses")
    return wer([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps])
