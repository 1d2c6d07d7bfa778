"""A made-up "house style" task: turn a sentence into one JSON record of a fixed schema.

A language model that was never shown the house style cannot know it, so it fails before
fine-tuning and the fine-tune's effect is all there is to measure (``bench/peft_generative.py``
tunes SmolLM2-135M-Instruct on it with LoRA). Every example is generated here, deterministically
from a seed, so nothing is downloaded::

    instruction  Put this in house style: There were seven blue kites in Mira's basket.
    answer       {"name": "Mira", "item": "kite", "colour": "blue", "count": 7}

The schema (:data:`FIELDS`, in this order): ``name``, ``item`` (singular, whatever the sentence
says), ``colour`` and ``count`` (an integer, also when the sentence spells it out). Sentences
come from a few templates with different word orders, so copying words in order is not enough.

:func:`score_reply` grades a model's reply three ways: schema-valid (the whole reply is one JSON
object with exactly the schema's keys and types), exact (valid and every value right) and field
accuracy (values right, read from the first JSON object anywhere in the reply, so content counts
even when the format is off). :class:`ChatSftData` turns examples into supervised fine-tuning
batches through a chat template, with the loss on the answer tokens only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glassformer.models.base import IGNORE_INDEX

FIELDS = ("name", "item", "colour", "count")
NAMES = ("Mira", "Tomas", "Ines", "Kofi", "Lena", "Arjun", "Yuki", "Oskar", "Nadia", "Felix", "Amara",
         "Bruno", "Chloe", "Dmitri", "Elif", "Gustav", "Hana", "Ivo", "Jasmin", "Karl", "Leila", "Mateo",
         "Noor", "Pavel", "Rosa", "Sami", "Talia", "Viktor", "Wren", "Zofia")  # fmt: skip
ITEMS = {"kite": "kites", "box": "boxes", "cup": "cups", "lamp": "lamps", "scarf": "scarves",
         "pencil": "pencils", "brush": "brushes", "candle": "candles", "ribbon": "ribbons", "glove": "gloves",
         "bottle": "bottles", "marble": "marbles", "shell": "shells", "button": "buttons", "leaf": "leaves",
         "balloon": "balloons", "teapot": "teapots", "notebook": "notebooks", "feather": "feathers",
         "dish": "dishes"}  # fmt: skip
COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "white", "black", "grey", "pink",
           "brown", "silver")  # fmt: skip
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")  # fmt: skip
MIN_COUNT, MAX_COUNT = 2, 30
TEMPLATES = (
    "{name} bought {count} {colour} {items} at the market.",
    "There were {count} {colour} {items} in {name}'s basket.",
    "At the fair, {name} won {count} {items}, every one of them {colour}.",
    "{Count} {colour} {items} were left on the doorstep for {name}.",
    "{name} painted {count} {items} {colour} before lunch.",
    "Yesterday {name} found {count} {colour} {items} under the stairs.",
    "The parcel for {name} held {count} {items}, all {colour}.",
)
INSTRUCTIONS = (
    "Put this in house style: {sentence}",
    "House style, please: {sentence}",
    "Record this in our house style. {sentence}",
)


@dataclass(frozen=True)
class Example:
    """One task: the user's instruction, the reply wanted (canonical JSON) and the record itself."""

    instruction: str
    answer: str
    record: dict[str, Any]


def render_record(record: dict[str, Any]) -> str:
    """The house style itself: the schema's keys in order, ``json.dumps``' default spacing."""
    return json.dumps({k: record[k] for k in FIELDS})


def _example(rng: random.Random) -> Example:
    record = {"name": rng.choice(NAMES), "item": rng.choice(sorted(ITEMS)), "colour": rng.choice(COLOURS),
              "count": rng.randint(MIN_COUNT, MAX_COUNT)}  # fmt: skip
    n = record["count"]
    count = NUMBER_WORDS[n] if n < len(NUMBER_WORDS) and rng.random() < 0.5 else str(n)
    sentence = rng.choice(TEMPLATES).format(
        name=record["name"], count=count, Count=count.capitalize(), colour=record["colour"],
        items=ITEMS[record["item"]],
    )  # fmt: skip
    instruction = rng.choice(INSTRUCTIONS).format(sentence=sentence)
    return Example(instruction, render_record(record), record)


def make_examples(n: int, seed: int = 0, exclude: Iterable[str] = ()) -> list[Example]:
    """``n`` examples with distinct instructions, the same for the same seed; none in ``exclude``."""
    if n < 0:
        raise ValueError(f"n={n}: the number of examples must be >= 0")
    capacity = len(NAMES) * len(ITEMS) * len(COLOURS) * (MAX_COUNT - MIN_COUNT + 1)
    if n > capacity // 2:
        raise ValueError(
            f"n={n}: the generator has about {capacity} distinct records; ask for at most {capacity // 2}"
        )
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[Example] = []
    while len(out) < n:
        example = _example(rng)
        if example.instruction not in seen:
            seen.add(example.instruction)
            out.append(example)
    return out


def house_style_splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """A training set and a held-out set that shares no instruction with it."""
    train = make_examples(n_train, seed)
    test = make_examples(n_test, seed + 1_000_003, exclude=(e.instruction for e in train))
    return train, test


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass(frozen=True)
class ReplyScore:
    """How one reply did: ``valid`` (exact schema), ``exact`` (valid, all values right), ``fields_right``."""

    valid: bool
    exact: bool
    fields_right: int


def is_schema_valid(value: Any) -> bool:
    """A JSON object with exactly :data:`FIELDS` as keys, strings for the words, an integer count."""
    if not isinstance(value, dict) or set(value) != set(FIELDS):
        return False
    words_ok = all(isinstance(value[k], str) for k in FIELDS if k != "count")
    return words_ok and isinstance(value["count"], int) and not isinstance(value["count"], bool)


def first_json_object(text: str) -> Any:
    """The first JSON object that starts at some ``{`` of ``text`` (None if there is none)."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def score_reply(reply: str, record: dict[str, Any]) -> ReplyScore:
    """Grade ``reply`` against the wanted ``record`` (see the module note for the three grades)."""
    try:
        whole = json.loads(reply.strip())
    except json.JSONDecodeError:
        whole = None
    valid = is_schema_valid(whole)
    found = whole if isinstance(whole, dict) else first_json_object(reply)
    right = 0
    if isinstance(found, dict):
        right = sum(
            k in found and type(found[k]) is type(record[k]) and found[k] == record[k] for k in FIELDS
        )
    return ReplyScore(valid, valid and right == len(FIELDS), right)


def summarize(scores: Sequence[ReplyScore]) -> dict[str, float]:
    """Rates over a set of replies: ``schema_valid``, ``exact_match`` and ``field_accuracy``, in [0, 1]."""
    if not scores:
        raise ValueError("no replies to summarize")
    n = len(scores)
    return {
        "schema_valid": sum(s.valid for s in scores) / n,
        "exact_match": sum(s.exact for s in scores) / n,
        "field_accuracy": sum(s.fields_right for s in scores) / (n * len(FIELDS)),
        "n": n,
    }


# ---------------------------------------------------------------------------------------------
# supervised fine-tuning batches


class ChatSftData:
    """Examples as ``{"input_ids", "targets"}`` for a causal LM, loss on the answer tokens only.

    ``render_prompt(instruction)`` is the chat template's text up to the start of the assistant's
    turn; the answer is encoded on its own and appended, followed by ``end_of_turn`` (the token
    that ends the turn, so the model learns to stop), which is exactly what decoding sees: the
    prompt's ids, then the model's own tokens. Targets are the next token, ``-100`` wherever the
    next token is still the prompt. ``collate`` pads on the right (``pad_id`` in the inputs,
    ``-100`` in the targets), so no attention mask is needed: causal attention never looks ahead
    into the padding, and padded positions carry no loss. A map-style data set for
    ``glassformer.train.Trainer``, which uses its ``collate``.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: Any,
        render_prompt: Callable[[str], str],
        end_of_turn: str,
        *,
        pad_id: int = 0,
        max_len: int | None = None,
    ) -> None:
        if not examples:
            raise ValueError("ChatSftData needs at least one example")
        self.pad_id = pad_id
        self.rows = [self._encode(e, tokenizer, render_prompt, end_of_turn) for e in examples]
        longest = max(len(ids) for ids, _ in self.rows)
        if max_len is not None and longest > max_len:
            raise ValueError(f"an example is {longest} tokens long, more than max_len={max_len}; raise max_len "
                             "(the model's context) or shorten the chat template's system message")  # fmt: skip

    @staticmethod
    def _encode(
        example: Example, tokenizer: Any, render_prompt: Callable[[str], str], end: str
    ) -> tuple[list[int], int]:
        prompt = tokenizer.encode(render_prompt(example.instruction))
        answer = tokenizer.encode(example.answer + end)
        return prompt + answer, len(prompt)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        ids, n_prompt = self.rows[index]
        tokens = torch.tensor(ids, dtype=torch.long)
        targets = tokens[1:].clone()
        targets[: n_prompt - 1] = IGNORE_INDEX  # predicting prompt tokens is not the task
        return {"input_ids": tokens[:-1], "targets": targets}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n], targets[row, :n] = item["input_ids"], item["targets"]
        return {"input_ids": ids, "targets": targets}  # (B, T) each

    def answer_tokens(self) -> int:
        """Tokens that carry loss, over the whole set (what one epoch trains on)."""
        return sum(len(ids) - n for ids, n in self.rows)
