"""Our corpus BLEU against sacrebleu's on real Multi30k sentences and made-up systems."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import pytest

sacrebleu = pytest.importorskip("sacrebleu")

from glassformer.metrics.bleu import corpus_bleu, tokenize_13a  # noqa: E402

DATA = Path(os.environ.get("GLASSFORMER_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
MULTI30K = DATA / "multi30k" / "task1" / "raw"

TORTURE = [
    "Hello, world. It's 3.14 - or 3,000-odd &quot;things&quot; & more!",
    "A dash-separated phrase; (parentheses) [brackets] {braces} 1990-2000.",
    "Ein Mann fährt Fahrrad.  Zwei Hunde... spielen?",
    "",
    "x",
]


def _references() -> list[str]:
    if (MULTI30K / "val.de.gz").exists():
        with gzip.open(MULTI30K / "val.de.gz", "rt", encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f][:300]
    rng = random.Random(0)
    words = "ein mann eine frau hund spielt im park , . auf der straße mit einem ball".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) for _ in range(300)]


def _systems(refs: list[str]) -> dict[str, list[str]]:
    rng = random.Random(1)

    def drop(s: str, p: float) -> str:
        return " ".join(w for w in s.split() if rng.random() > p)

    def swap(s: str) -> str:
        w = s.split()
        if len(w) > 2:
            i = rng.randrange(len(w) - 1)
            w[i], w[i + 1] = w[i + 1], w[i]
        return " ".join(w)

    return {
        "copy": list(refs),
        "drop10": [drop(s, 0.1) for s in refs],
        "drop50": [drop(s, 0.5) for s in refs],
        "swap": [swap(s) for s in refs],
        "longer": [s + " und so weiter ." for s in refs],
        "shuffled": rng.sample(refs, len(refs)),
        "one_word": [s.split()[0] if s.split() else "" for s in refs],
    }


@pytest.mark.parametrize("name", ["copy", "drop10", "drop50", "swap", "longer", "shuffled", "one_word"])
def test_corpus_bleu_equals_sacrebleu(name: str) -> None:
    refs = _references()
    hyps = _systems(refs)[name]
    ours = corpus_bleu(hyps, [refs])
    theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    assert abs(ours.score - theirs.score) < 0.01, (name, ours.score, theirs.score)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)


def test_no_match_at_any_order_scores_zero() -> None:
    """A degenerate model (one token repeated) matches nothing: sacrebleu says 0, not a smoothed score,
    which on a few sentences would be several points."""
    refs = _references()[:3]
    hyps = ["d d d d d d d d"] * 3
    ours = corpus_bleu(hyps, [refs])
    theirs = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    assert ours.score == theirs.score == 0.0 and ours.precisions == (0.0,) * 4
    assert ours.brevity_penalty == pytest.approx(theirs.bp)
    assert (ours.sys_len, ours.ref_len) == (theirs.sys_len, theirs.ref_len)
    mixed = [hyps[0], refs[1]]  # one sentence matches: the smoothing applies again
    assert corpus_bleu(mixed, [refs[:2]]).score == pytest.approx(sacrebleu.corpus_bleu(mixed, [refs[:2]]).score, abs=0.01)


def test_two_reference_streams_and_lowercase() -> None:
    refs = _references()
    systems = _systems(refs)
    second = systems["drop10"]
    hyps = [s.upper() for s in systems["swap"]]
    for lower in (False, True):
        ours = corpus_bleu(hyps, [refs, second], lowercase=lower)
        theirs = sacrebleu.corpus_bleu(hyps, [refs, second], tokenize="13a", lowercase=lower)
        assert abs(ours.score - theirs.score) < 0.01


def test_tokenizer_matches_13a_on_torture_text() -> None:
    tok = sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()
    for line in TORTURE:
        assert tokenize_13a(line) == tok(line), line


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match="list of hypothesis"):
        corpus_bleu("a sentence", [["a sentence"]])
    with pytest.raises(ValueError, match="2 sentences but there are 1"):
        corpus_bleu(["a"], [["a", "b"]])
    with pytest.raises(TypeError, match="reference stream 0 is a string"):
        corpus_bleu(["a"], ["a"])
