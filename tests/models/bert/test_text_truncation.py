"""Texts longer than max_len: one warning per data set with the count, not one per text."""

from __future__ import annotations

import warnings

import pytest

from glassformer.models.bert.finetune import LabelSet, Rows, encode_rows
from glassformer.models.bert.text import BertEncoder
from glassformer.tokenizers.wordpiece import WordPiece

WORDS = ["good", "bad", "film", "plot"]


def _encoder(max_len: int = 8, overflow: str = "truncate") -> BertEncoder:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    return BertEncoder(WordPiece({t: i for i, t in enumerate(tokens)}), max_len, overflow)  # type: ignore[arg-type]


def _caught(call) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_a_data_set_of_long_texts_gives_one_warning_with_the_count() -> None:
    enc = _encoder(max_len=8)
    texts = [" ".join(["film"] * n) for n in (3, 20, 9, 4, 12)]  # room for 6 pieces: 3 of 5 are too long
    examples, messages = _caught(lambda: enc.encode_many(texts))
    assert len(messages) == 1
    assert messages[0].startswith("3 of 5 texts were longer than max_len=8 tokens: the longest, 'film film")
    assert "has 20 tokens but the model takes 6" in messages[0]
    assert [len(e["input_ids"]) for e in examples] == [5, 8, 8, 6, 8]
    assert all(e["input_ids"][-1] == enc.sep_id for e in examples)


def test_fine_tuning_rows_warn_once_per_split() -> None:
    enc = _encoder(max_len=6)
    rows = Rows([" ".join(["good"] * (i % 7)) or "bad" for i in range(300)], ["pos", "neg"] * 150, "train.csv")
    _, messages = _caught(lambda: encode_rows(enc, rows, LabelSet(["neg", "pos"])))
    cut = sum(1 for t in rows.texts if len(t.split()) > 4)
    assert len(messages) == 1 and messages[0].startswith(f"{cut} of 300 texts were longer than max_len=6")


def test_texts_that_fit_and_pairs() -> None:
    enc = _encoder(max_len=8)
    _, messages = _caught(lambda: enc.encode_many(["good film", "bad plot"]))
    assert messages == []
    pairs, messages = _caught(lambda: enc.encode_many(["good film good", "bad"], ["plot " * 6, "film"]))
    assert len(messages) == 1 and messages[0].startswith("1 of 2 texts was longer") and "its end was cut off" in messages[0]
    assert len(pairs[0]["input_ids"]) == 8 and pairs[0]["input_ids"].count(enc.sep_id) == 2
    with pytest.raises(ValueError, match="2 texts but 1 second segments"):
        enc.encode_many(["a", "b"], ["c"])


def test_overflow_error_still_refuses() -> None:
    with pytest.raises(ValueError, match="has 20 tokens but the model takes 6.*overflow='truncate'"):
        _encoder(max_len=8, overflow="error").encode_many(["good", " ".join(["film"] * 20)])
