"""Masked-language-model batches: BERT's pretraining objective (Devlin et al. 2018, section 3.1).

Of the tokens that may be masked (never ``[CLS]``, ``[SEP]``, ``[PAD]`` or other special tokens),
15% are *chosen*; the model must predict the original token at each chosen position. To keep the
input at fine-tuning time (which has no ``[MASK]``) close to the input at pretraining time, a
chosen token is replaced by ``[MASK]`` 80% of the time, by a random token 10%, and left as is 10%.

Whole-word masking (BERT's 2019 release) chooses *words*: when a word is chosen, every one of its
WordPiece pieces (``play ##ing``) is chosen with it, so the model cannot recover ``##ing`` from
``play`` alone.

Next-sentence prediction (the original second objective, dropped by RoBERTa) pairs segment A with
either the sentence that really follows it (label 0) or a random one (label 1).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from glassformer.models.bert.model import IGNORE_INDEX


@dataclass
class MLMCollator:
    """Turns a list of examples (``{"input_ids": [...]}``, optionally ``token_type_ids`` and
    ``next_sentence_label``) into a padded, masked batch with ``labels``.

    ``continuation`` is a bool vector over the vocabulary, True for pieces that continue a word
    (WordPiece's ``##`` pieces); it is needed only for ``whole_word=True``.
    """

    vocab_size: int
    mask_id: int
    pad_id: int
    special_ids: Sequence[int]
    mlm_probability: float = 0.15
    mask_ratio: float = 0.8
    random_ratio: float = 0.1
    whole_word: bool = False
    continuation: Tensor | None = None
    max_len: int | None = None
    seed: int | None = None
    _generator: torch.Generator = field(init=False, repr=False)
    _special: Tensor = field(init=False, repr=False)
    _random_pool: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.mask_ratio < 0 or self.random_ratio < 0 or self.mask_ratio + self.random_ratio > 1.0:
            raise ValueError(
                f"mask_ratio ({self.mask_ratio}) + random_ratio ({self.random_ratio}) must lie in [0, 1]"
            )
        if self.whole_word and self.continuation is None:
            raise ValueError("whole_word=True needs continuation= (which vocabulary pieces continue a word)")
        if self.continuation is not None and self.continuation.shape != (self.vocab_size,):
            raise ValueError(f"continuation must be a bool vector of length vocab_size={self.vocab_size}")
        self._generator = torch.Generator()
        self._generator.manual_seed(self.seed if self.seed is not None else random.randrange(2**62))
        special = torch.zeros(self.vocab_size, dtype=torch.bool)
        special[list({*self.special_ids, self.mask_id, self.pad_id})] = True
        self._special = special
        self._random_pool = torch.nonzero(~special).flatten()  # random replacements are ordinary tokens

    def pad(self, examples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Right-pad to the longest example (dynamic padding) and build ``attention_mask``."""
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        seqs = [list(e["input_ids"])[: self.max_len] if self.max_len else list(e["input_ids"]) for e in examples]
        if any(not s for s in seqs):
            raise ValueError("an example has no tokens; encode texts with [CLS] ... [SEP]")
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in examples[0]:
            types = torch.zeros_like(ids)
            for i, e in enumerate(examples):
                t = list(e["token_type_ids"])[:width]
                types[i, : len(t)] = torch.tensor(t, dtype=torch.long)
            batch["token_type_ids"] = types
        if "next_sentence_label" in examples[0]:
            batch["next_sentence_label"] = torch.tensor([int(e["next_sentence_label"]) for e in examples])
        return batch

    def choose(self, input_ids: Tensor, attention_mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bool ``(B, T)``: the positions the model must predict."""
        g = generator or self._generator
        eligible = ~self._special[input_ids] & attention_mask.bool()  # (B, T)
        if not self.whole_word:
            draw = torch.rand(input_ids.shape, generator=g)
            return (draw < self.mlm_probability) & eligible
        # a word starts at every eligible piece that is not a continuation (or follows a non-eligible one)
        cont = self.continuation[input_ids] & eligible
        prev_eligible = torch.zeros_like(eligible)
        prev_eligible[:, 1:] = eligible[:, :-1]
        starts = eligible & ~(cont & prev_eligible)
        word_id = torch.cumsum(starts.long(), dim=1)  # (B, T): pieces of one word share an id
        draw = torch.rand((input_ids.shape[0], input_ids.shape[1] + 1), generator=g)
        chosen_word = draw < self.mlm_probability  # per (row, word id)
        return torch.gather(chosen_word, 1, word_id) & eligible

    def mask(self, input_ids: Tensor, attention_mask: Tensor,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Returns ``(masked input_ids, labels)``; labels are ``-100`` where nothing is predicted.

        ``generator`` (default: the collator's own) makes a batch a pure function of its seed, which
        the training engine's ``get_batch(split, step, generator)`` relies on for exact resume."""
        g = generator or self._generator
        chosen = self.choose(input_ids, attention_mask, g)
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        action = torch.rand(input_ids.shape, generator=g)
        to_mask = chosen & (action < self.mask_ratio)
        to_random = chosen & (action >= self.mask_ratio) & (action < self.mask_ratio + self.random_ratio)
        out = input_ids.clone()
        out[to_mask] = self.mask_id
        picks = torch.randint(len(self._random_pool), (int(to_random.sum()),), generator=g)
        out[to_random] = self._random_pool[picks]
        return out, labels  # the remaining chosen tokens keep their own id

    def __call__(self, examples: Sequence[dict[str, Any]], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        batch = self.pad(examples)
        batch["input_ids"], batch["labels"] = self.mask(batch["input_ids"], batch["attention_mask"], generator)
        return batch


def continuation_mask(vocab: Sequence[str]) -> Tensor:
    """Bool vector: True for WordPiece pieces that continue a word (``##ing``)."""
    return torch.tensor([tok.startswith("##") for tok in vocab], dtype=torch.bool)


def nsp_examples(
    documents: Iterable[Sequence[Sequence[int]]],
    cls_id: int,
    sep_id: int,
    max_len: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sentence pairs for next-sentence prediction from documents given as lists of encoded sentences.

    Each pair is ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for A and 1 for B. Half the time B is
    the sentence that follows A (label 0), otherwise a random sentence from another place (label 1).
    The longer segment is trimmed until the pair fits ``max_len``.
    """
    rng = random.Random(seed)
    docs = [list(d) for d in documents if len(d) >= 2]
    if not docs:
        raise ValueError("next-sentence prediction needs documents with at least two sentences")
    every = [s for d in docs for s in d]
    out: list[dict[str, Any]] = []
    for d in docs:
        for i in range(len(d) - 1):
            a = list(d[i])
            if rng.random() < 0.5:
                b, label = list(d[i + 1]), 0
            else:
                b, label = list(rng.choice(every)), 1
            while len(a) + len(b) + 3 > max_len and (a or b):
                (a if len(a) >= len(b) else b).pop()
            ids = [cls_id, *a, sep_id, *b, sep_id]
            out.append(
                {"input_ids": ids, "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1), "next_sentence_label": label}
            )
    return out
