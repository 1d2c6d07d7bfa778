"""The house-style task: deterministic examples, disjoint splits, the three grades, answer-only loss."""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.data.house_style import (
    FIELDS,
    ITEMS,
    NUMBER_WORDS,
    ChatSftData,
    ReplyScore,
    house_style_splits,
    make_examples,
    score_reply,
    summarize,
)
from glassformer.models.base import IGNORE_INDEX
from glassformer.tokenizers import CharTokenizer

RECORD = {"name": "Mira", "item": "kite", "colour": "blue", "count": 7}


def test_examples_are_deterministic_distinct_and_say_what_the_record_holds() -> None:
    examples = make_examples(300, seed=3)
    assert examples == make_examples(300, seed=3)
    assert [e.instruction for e in examples] != [e.instruction for e in make_examples(300, seed=4)]
    assert len({e.instruction for e in examples}) == 300
    for e in examples:
        assert list(json.loads(e.answer)) == list(FIELDS)  # the house style's key order
        assert json.loads(e.answer) == e.record
        sentence = e.instruction.lower()
        assert e.record["name"].lower() in sentence and e.record["colour"] in sentence
        assert ITEMS[e.record["item"]] in sentence  # the plural is written, the singular recorded
        n = e.record["count"]
        words = sentence.replace(",", " ").replace(".", " ").split()
        assert str(n) in words or (n < len(NUMBER_WORDS) and NUMBER_WORDS[n] in words)
    templates = {e.instruction.split(": ", 1)[-1].split(". ", 1)[-1][:12] for e in examples}
    assert len(templates) > 5  # several word orders, not one


def test_splits_share_no_instruction() -> None:
    train, test = house_style_splits(500, 100, seed=0)
    assert len(train) == 500 and len(test) == 100
    assert not {e.instruction for e in train} & {e.instruction for e in test}
    assert house_style_splits(500, 100, seed=0) == (train, test)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        make_examples(-1)
    with pytest.raises(ValueError, match="at most"):
        make_examples(10**7)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"name": "Mira", "item": "kite", "colour": "blue", "count": 7}', ReplyScore(True, True, 4)),
        ('  {"count": 7, "colour": "blue", "item": "kite", "name": "Mira"}\n', ReplyScore(True, True, 4)),
        (
            'Sure! ```json\n{"name": "Mira", "item": "kite", "colour": "blue", "count": 7}\n```',
            ReplyScore(False, False, 4),
        ),
        ('{"name": "Mira", "item": "kites", "colour": "blue", "count": 7}', ReplyScore(True, False, 3)),
        ('{"name": "Mira", "item": "kite", "colour": "blue", "count": "7"}', ReplyScore(False, False, 3)),
        ('{"name": "Mira", "item": "kite", "colour": "blue", "count": true}', ReplyScore(False, False, 3)),
        ('{"name": "Mira", "item": "kite", "colour": "blue"}', ReplyScore(False, False, 3)),
        (
            '{"name": "Mira", "item": "kite", "colour": "blue", "count": 7, "shop": "x"}',
            ReplyScore(False, False, 4),
        ),
        ('[1, 2] then {not json} then {"name": "Mira"}', ReplyScore(False, False, 1)),
        ("Mira has seven blue kites.", ReplyScore(False, False, 0)),
        ("", ReplyScore(False, False, 0)),
    ],
)
def test_score_reply(reply: str, expected: ReplyScore) -> None:
    assert score_reply(reply, RECORD) == expected


def test_summarize_rates() -> None:
    scores = [
        ReplyScore(True, True, 4),
        ReplyScore(True, False, 2),
        ReplyScore(False, False, 1),
        ReplyScore(False, False, 0),
    ]
    assert summarize(scores) == {"schema_valid": 0.5, "exact_match": 0.25, "field_accuracy": 7 / 16, "n": 4}
    with pytest.raises(ValueError, match="no replies"):
        summarize([])


def _data(**options) -> tuple[ChatSftData, CharTokenizer, list]:
    examples = make_examples(6, seed=1)
    text = "".join(e.instruction + e.answer for e in examples) + "<>user\n"
    tokenizer = CharTokenizer.from_text(text, special_tokens=["<end>"])
    data = ChatSftData(examples, tokenizer, lambda s: f"<user>\n{s}\n", "<end>", pad_id=0, **options)
    return data, tokenizer, examples


def test_sft_rows_carry_loss_on_the_answer_only() -> None:
    data, tokenizer, examples = _data()
    end = tokenizer.token_to_id("<end>")
    for i, example in enumerate(examples):
        row = data[i]
        ids, targets = row["input_ids"], row["targets"]
        prompt = tokenizer.encode(f"<user>\n{example.instruction}\n")
        assert ids.tolist()[: len(prompt)] == prompt
        assert torch.equal(targets[targets != IGNORE_INDEX][:-1], ids[len(prompt) :])  # next-token shift
        kept = targets[targets != IGNORE_INDEX].tolist()
        assert kept[-1] == end and tokenizer.decode(kept[:-1]) == example.answer
        assert (targets[: len(prompt) - 1] == IGNORE_INDEX).all()
    assert data.answer_tokens() == sum(len(e.answer) + 1 for e in examples)


def test_collate_pads_on_the_right_without_loss() -> None:
    data, _, _ = _data()
    items = [data[i] for i in range(len(data))]
    batch = data.collate(items)
    width = max(len(item["input_ids"]) for item in items)
    assert batch["input_ids"].shape == batch["targets"].shape == (len(items), width)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert torch.equal(batch["input_ids"][row, :n], item["input_ids"])
        assert (batch["input_ids"][row, n:] == 0).all() and (batch["targets"][row, n:] == IGNORE_INDEX).all()


def test_too_long_examples_and_no_examples_are_errors() -> None:
    with pytest.raises(ValueError, match="max_len=20"):
        _data(max_len=20)
    with pytest.raises(ValueError, match="at least one example"):
        ChatSftData([], None, str, "<end>")
