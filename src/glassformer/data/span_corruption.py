"""T5's span corruption (Raffel et al. 2020, section 3.1.4): the pretraining objective, as a collator.

A random 15% of a sequence's tokens (``noise_density``), in spans of 3 on average
(``mean_noise_span_length``), are cut out. The input keeps the rest, each cut span replaced by one
sentinel; the target lists the cut spans, each behind its sentinel::

    original  Thank you for inviting me to your party last week .
    input     Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
    target    <extra_id_0> for inviting <extra_id_1> last </s>

The lengths follow T5's code exactly (``t5.data.preprocessors``):

* :func:`noise_span_counts` is ``random_spans_noise_mask``'s arithmetic: ``round(length *
  density)`` noise tokens (clipped to ``[1, length - 1]``) in ``round(noise / mean_span)`` spans
  (at least one);
* :func:`random_spans_noise_mask` cuts the noise tokens and the other tokens each into that many
  non-empty spans, uniformly at random, and interleaves them, starting with a non-noise span;
* :func:`compute_input_and_target_lengths` is the raw length whose corrupted input fills
  ``inputs_length`` exactly, and its target's length: pack text into pieces of the raw length
  (:func:`split_into_pieces`) and every input comes out the same length.

Sentinels count down from the top: ``<extra_id_0>`` is the highest id (``T5Config.sentinel_ids``,
or :func:`sentinels_from_top` of the tokenizer's vocabulary size; :func:`sentinel_tokens` names
them for a tokenizer trainer so they land there), or the ids a tokenizer gives those names
(:func:`sentinel_ids_from_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glassformer.models.base import IGNORE_INDEX


def sentinels_from_top(vocab_size: int, count: int = 100) -> tuple[int, ...]:
    """``(<extra_id_0>, <extra_id_1>, ...)`` = ``(vocab_size - 1, vocab_size - 2, ...)``, T5's numbering."""
    if count <= 0 or count >= vocab_size:
        raise ValueError(f"{count} sentinels do not fit under vocab_size={vocab_size}")
    return tuple(vocab_size - 1 - i for i in range(count))


def sentinel_tokens(count: int = 100) -> list[str]:
    """``["<extra_id_{count-1}>", ..., "<extra_id_0>"]``: appended last to a tokenizer's special tokens
    (``train_bpe(..., special_tokens=[..., *sentinel_tokens()])`` puts specials at the top ids in
    order), ``<extra_id_0>`` gets the highest id, as in T5's vocabulary."""
    return [f"<extra_id_{i}>" for i in reversed(range(count))]


def sentinel_ids_from_tokenizer(tokenizer: Any, count: int | None = None) -> tuple[int, ...]:
    """The ids of ``<extra_id_0>``, ``<extra_id_1>``, ... by name (all the tokenizer has, or ``count``)."""
    ids: list[int] = []
    while count is None or len(ids) < count:
        token_id = tokenizer.token_to_id(f"<extra_id_{len(ids)}>")
        if token_id is None:
            break
        ids.append(int(token_id))
    if not ids or (count is not None and len(ids) < count):
        raise ValueError(
            f"the tokenizer has {len(ids)} sentinel tokens <extra_id_i> (wanted {count or 'some'}); train it with "
            "special_tokens=[..., *glassformer.data.span_corruption.sentinel_tokens(n)]"
        )
    return tuple(ids)


def noise_span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` for a sequence of ``length`` tokens, as T5 rounds them."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens (one kept, one masked), got {length}")
    num_noise = min(max(int(np.round(length * noise_density)), 1), length - 1)
    num_spans = max(int(np.round(num_noise / mean_noise_span_length)), 1)
    return num_noise, num_spans


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths of ``num_segments`` non-empty runs that add up to ``num_items``, uniformly at random.

    Choose ``num_segments - 1`` of the ``num_items - 1`` gaps between items as cuts.
    """
    first_in_segment = np.zeros(num_items, dtype=bool)
    cuts = rng.choice(num_items - 1, size=num_segments - 1, replace=False) + 1
    first_in_segment[cuts] = True
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:  # fmt: skip
    """Bool ``(length,)``: True where a token is noise, in spans.

    T5's layout alternates kept and noise spans starting with a kept one, so the first token is
    always kept and the last always noise (T5's ``random_roll``, off by default, would rotate it).
    """
    rng = np.random.default_rng() if rng is None else rng
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    # T5 leaves this clip out: at densities above 0.5 there can be fewer kept tokens than spans
    num_spans = min(num_spans, length - num_noise)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    kept_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([kept_lengths, noise_lengths], axis=1).reshape(-1)  # kept, noise, kept, noise ...
    span_id = np.repeat(np.arange(2 * num_spans), interleaved)  # (length,)
    return span_id % 2 == 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """``(raw tokens, target length)`` so that a corrupted raw piece is exactly ``inputs_length`` long.

    A raw piece of ``n`` tokens becomes ``n - noise + spans + 1`` input tokens (one sentinel per
    span, then eos) and ``noise + spans + 1`` target tokens; the raw length is the largest ``n``
    whose input still fits. T5's rounding for this is its own (no clipping), so is ours.
    """

    def lengths(n: int) -> tuple[int, int]:
        noise = int(round(n * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return n - noise + spans + 1, noise + spans + 1

    if inputs_length < 2:
        raise ValueError(f"inputs_length must be at least 2, got {inputs_length}")
    n = inputs_length
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    _, targets_length = lengths(n)
    if noise_density == 0.5 and targets_length > inputs_length:  # T5's tweak: equal lengths at density 0.5
        n -= 1
        targets_length -= 1
    return n, targets_length


def split_into_pieces(token_ids: Sequence[int], piece_length: int) -> list[list[int]]:
    """Consecutive pieces of ``piece_length`` tokens of a token stream (the short tail is dropped)."""
    if piece_length < 2:
        raise ValueError(f"piece_length must be at least 2, got {piece_length}")
    ids = list(token_ids)
    return [ids[i : i + piece_length] for i in range(0, len(ids) - piece_length + 1, piece_length)]


def corrupt(
    token_ids: Sequence[int], noise_mask: np.ndarray, sentinel_ids: Sequence[int], eos_token_id: int
) -> tuple[list[int], list[int]]:
    """``(input, target)`` of one sequence: each noise span becomes the next sentinel in the input,
    and the target is every span behind its sentinel; both end with eos."""
    ids = list(token_ids)
    if len(noise_mask) != len(ids):
        raise ValueError(f"noise_mask has {len(noise_mask)} entries for {len(ids)} tokens")
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (token, noise) in enumerate(zip(ids, noise_mask, strict=True)):
        starts = noise and (i == 0 or not noise_mask[i - 1])
        if starts:
            span += 1
            if span >= len(sentinel_ids):
                raise ValueError(
                    f"the sequence has more noise spans than the {len(sentinel_ids)} sentinels; "
                    "use more sentinels or shorter sequences"
                )
            inputs.append(sentinel_ids[span])
            targets.append(sentinel_ids[span])
        (targets if noise else inputs).append(token)
    return inputs + [eos_token_id], targets + [eos_token_id]


def uncorrupt(
    inputs: Sequence[int], targets: Sequence[int], sentinel_ids: Sequence[int], eos_token_id: int
) -> list[int]:
    """The original sequence back from a corrupted ``(input, target)`` pair: each sentinel of the
    input replaced by the tokens that follow the same sentinel in the target."""
    sentinels = set(sentinel_ids)
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for token in _strip_eos(targets, eos_token_id):
        if token in sentinels:
            current = spans.setdefault(token, [])
        elif current is None:
            raise ValueError(f"the target starts with token {token}, not a sentinel")
        else:
            current.append(token)
    out: list[int] = []
    for token in _strip_eos(inputs, eos_token_id):
        out.extend(spans[token] if token in sentinels else [token])
    return out


def _strip_eos(ids: Sequence[int], eos_token_id: int) -> list[int]:
    ids = list(ids)
    return ids[:-1] if ids and ids[-1] == eos_token_id else ids


@dataclass
class SpanCorruptionCollator:
    """Token sequences -> a T5 batch: ``input_ids``, ``attention_mask`` and ``labels``.

    Inputs are right-padded with ``pad_token_id`` (mask 0); labels with -100, which the loss skips
    (the model shifts them right itself to make its decoder inputs). Each call draws from the
    collator's own seeded generator, so a run replays exactly. A sequence that already holds a
    sentinel id is refused: its reconstruction would be ambiguous.
    """

    sentinel_ids: Sequence[int]
    eos_token_id: int = 1
    pad_token_id: int = 0
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_noise_span_length < 1.0:
            raise ValueError(f"mean_noise_span_length must be at least 1, got {self.mean_noise_span_length}")
        self.sentinel_ids = tuple(int(s) for s in self.sentinel_ids)
        if not self.sentinel_ids:
            raise ValueError("span corruption needs sentinel ids (T5Config.sentinel_ids or sentinels_from_top)")
        if {self.eos_token_id, self.pad_token_id} & set(self.sentinel_ids):
            raise ValueError(f"pad/eos ({self.pad_token_id}, {self.eos_token_id}) are among the sentinel ids")
        self._sentinels = set(self.sentinel_ids)
        self.rng = np.random.default_rng(self.seed)

    def corrupt_one(self, token_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """One sequence's ``(input, target)``, eos included, from the collator's generator."""
        ids = [int(t) for t in token_ids]
        clash = self._sentinels.intersection(ids)
        if clash:
            raise ValueError(f"the sequence already holds sentinel id(s) {sorted(clash)[:5]}; strip them first")
        mask = random_spans_noise_mask(len(ids), self.noise_density, self.mean_noise_span_length, self.rng)
        return corrupt(ids, mask, self.sentinel_ids, self.eos_token_id)

    def __call__(self, examples: Sequence[Sequence[int]]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("an empty batch: give at least one sequence")
        pairs = [self.corrupt_one(e) for e in examples]
        src_len = max(len(i) for i, _ in pairs)
        tgt_len = max(len(t) for _, t in pairs)
        input_ids = torch.full((len(pairs), src_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pairs), src_len), dtype=torch.long)
        labels = torch.full((len(pairs), tgt_len), IGNORE_INDEX, dtype=torch.long)
        for row, (inputs, targets) in enumerate(pairs):
            input_ids[row, : len(inputs)] = torch.tensor(inputs)
            attention_mask[row, : len(inputs)] = 1
            labels[row, : len(targets)] = torch.tensor(targets)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
