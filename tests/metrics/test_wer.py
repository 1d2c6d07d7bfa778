"""WER against jiwer (the reference library) and the normalisation rules, one by one."""

from __future__ import annotations

import random

import jiwer
import pytest

from glassformer.metrics import edit_distance, normalize_text, normalized_wer, number_words, wer

VOCAB = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh", "the", "a"]

TRANSCRIPTS = [
    ("And so, my fellow Americans: ask not what your country can do for you, ask what you can do for your country.",
     " And so my fellow Americans ask not what your country can do for you ask what you can do for your country."),
    ("I have 5 cats and 42 dogs.", "i have five cats and forty-two dogs"),
    ("The meeting's at 3.5 hours past noon on 1,000 days", "the meetings at three point five hours past new on 1000 day"),
    ("Call 007 now!", "call zero zero seven now"),
    ("four two seven", "for two seven eight"),
    ("It's 1999, the year of the Y2K bug", "its nineteen ninety nine the year of the y two k bug"),
]


def _random_pairs(rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(VOCAB) for _ in range(rng.randint(1, 12))]
        hyp = list(ref)
        for _ in range(rng.randint(0, 6)):  # random substitutions, deletions and insertions
            op, where = rng.randrange(3), rng.randrange(len(hyp) + 1)
            if op == 0 and where < len(hyp):
                hyp[where] = rng.choice(VOCAB)
            elif op == 1 and where < len(hyp):
                del hyp[where]
            else:
                hyp.insert(where, rng.choice(VOCAB))
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return refs, hyps


def test_corpus_wer_equals_jiwer_on_random_pairs() -> None:
    rng = random.Random(0)
    for trial in range(40):
        refs, hyps = _random_pairs(rng, rng.randint(1, 25))
        assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps), abs=1e-12), trial


def test_per_pair_distance_equals_jiwer_counts() -> None:
    refs, hyps = _random_pairs(random.Random(1), 200)
    for ref, hyp in zip(refs, hyps):
        out = jiwer.process_words(ref, hyp)
        assert edit_distance(ref.split(), hyp.split()) == out.substitutions + out.deletions + out.insertions


def test_normalized_wer_equals_jiwer_on_transcripts() -> None:
    refs, hyps = zip(*TRANSCRIPTS)
    expected = jiwer.wer([normalize_text(r) for r in refs], [normalize_text(h) for h in hyps])
    assert normalized_wer(refs, hyps) == pytest.approx(expected, abs=1e-12)
    assert normalized_wer(TRANSCRIPTS[0][0], TRANSCRIPTS[0][1]) == 0.0  # punctuation and case only
    assert normalized_wer(*TRANSCRIPTS[1]) == 0.0  # digits against words, hyphenated


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", "five"),
        ("Five!", "five"),
        ("42", "forty two"),
        ("forty-two", "forty two"),
        ("100", "one hundred"),
        ("1,234,567", "one million two hundred thirty four thousand five hundred sixty seven"),
        ("3.14", "three point one four"),
        ("007", "zero zero seven"),
        ("don't STOP", "dont stop"),
        ("4th of July", "four th of july"),
        ("  a\tb\n", "a b"),
        ("", ""),
    ],
)
def test_normalize_rules(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_number_words_against_a_spelled_table() -> None:
    assert [number_words(n) for n in (0, 13, 20, 99, 101, 110, 1000, 1001, 10**6 + 5)] == [
        "zero", "thirteen", "twenty", "ninety nine", "one hundred one", "one hundred ten", "one thousand",
        "one thousand one", "one million five",
    ]
    with pytest.raises(ValueError, match="0 <= n"):
        number_words(-1)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no words"):
        wer([""], ["a"])
    with pytest.raises(TypeError, match=r"hypotheses\[0\] is a int"):
        wer(["a"], [3])
    with pytest.raises(TypeError, match="takes a string"):
        normalize_text(None)  # type: ignore[arg-type]
