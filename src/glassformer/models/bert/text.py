"""From text to BERT inputs: ``[CLS] tokens [SEP]`` (and pairs), truncation, dynamic padding.

The WordPiece tokenizer (``glassformer.tokenizers``) turns text into piece ids; this module adds
what BERT expects around them. An input longer than the position table is cut to fit with a
warning (``overflow="truncate"``, the default) or refused (``overflow="error"``): a silent cut
would hide that the end of a long review never reached the model. A data set warns once, with the
count (:meth:`BertEncoder.encode_many`): one warning per text would bury everything else.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

Overflow = Literal["truncate", "error"]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_vocab_tokenizer(folder: str | os.PathLike[str]) -> Any:
    """The WordPiece tokenizer of a model folder (``tokenizer.json``, else ``vocab.txt`` with the
    lower-casing ``tokenizer_config.json`` asks for)."""
    from glassformer.tokenizers.wordpiece import WordPiece

    return WordPiece.from_folder(folder)


def vocab_list(tokenizer: Any) -> list[str]:
    """The vocabulary as a list indexed by id."""
    vocab: dict[str, int] = tokenizer.vocab
    out = [""] * len(vocab)
    for tok, i in vocab.items():
        out[i] = tok
    return out


class BertEncoder:
    """Text (or a text pair) -> ``[CLS] A [SEP] (B [SEP])`` ids with segment ids, cut to ``max_len``."""

    def __init__(self, tokenizer: Any, max_len: int = 512, overflow: Overflow = "truncate") -> None:
        if overflow not in ("truncate", "error"):
            raise ValueError(f"overflow must be 'truncate' or 'error', got {overflow!r}")
        if max_len < 3:
            raise ValueError(f"max_len must leave room for [CLS] and [SEP] and a token, got {max_len}")
        self.tokenizer, self.max_len, self.overflow = tokenizer, max_len, overflow
        ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"the tokenizer's vocabulary lacks BERT's special tokens {missing}")
        self.pad_id, self.unk_id, self.cls_id = ids["[PAD]"], ids["[UNK]"], ids["[CLS]"]
        self.sep_id, self.mask_id = ids["[SEP]"], ids["[MASK]"]
        self.special_ids = list(ids.values())

    def pieces(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"expected a text string, got {type(text).__name__}")
        return list(self.tokenizer.encode(text))

    def encode(self, text: str, pair: str | None = None) -> dict[str, list[int]]:
        """One example. An empty text is allowed: it becomes ``[CLS] [SEP]``."""
        example, tokens = self._fit(text, pair)
        if tokens is not None:
            warnings.warn(self._cut_message(1, 1, tokens, text, pair is not None), stacklevel=2)
        return example

    def encode_many(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[dict[str, list[int]]]:
        """Examples for a data set; the texts cut to fit are counted in one warning, not one each."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pairs)} second segments; pairs go one to one")
        examples, cut, longest, longest_text = [], 0, 0, ""
        for i, text in enumerate(texts):
            example, tokens = self._fit(text, pairs[i] if pairs is not None else None)
            examples.append(example)
            if tokens is not None:
                cut += 1
                if tokens > longest:
                    longest, longest_text = tokens, text
        if cut:
            warnings.warn(self._cut_message(cut, len(texts), longest, longest_text, pairs is not None), stacklevel=2)
        return examples

    def batch(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Encode and pad several texts into model inputs."""
        return pad_batch(self.encode_many(texts), self.pad_id)

    def _room(self, paired: bool) -> int:
        return self.max_len - (3 if paired else 2)

    def _fit(self, text: str, pair: str | None) -> tuple[dict[str, list[int]], int | None]:
        """The example, and its token count before the cut when it had to be cut (else None)."""
        a = self.pieces(text)
        b = self.pieces(pair) if pair is not None else None
        room = self._room(b is not None)
        total = len(a) + (len(b) if b is not None else 0)
        if total > room:
            if self.overflow == "error":
                raise ValueError(f"text {_preview(text)!r} has {total} tokens but the model takes {room} "
                                 f"(max_len={self.max_len} with [CLS]/[SEP]); shorten it or pass overflow='truncate'")
            while len(a) + (len(b) if b is not None else 0) > room:  # trim the longer segment first
                (a if b is None or len(a) >= len(b) else b).pop()
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return {"input_ids": ids, "token_type_ids": types}, (total if total > room else None)

    def _cut_message(self, cut: int, count: int, longest: int, text: str, paired: bool) -> str:
        texts = "text" if count == 1 else "texts"
        were, ends = ("was", "its end was") if cut == 1 else ("were", "the end of each was")
        return (
            f"{cut:,} of {count:,} {texts} {were} longer than max_len={self.max_len} tokens: the longest, "
            f"{_preview(text)!r}, has {longest:,} tokens but the model takes {self._room(paired)} "
            f"(with [CLS]/[SEP]); {ends} cut off. Raise max_len, or pass overflow='error' to refuse such texts"
        )


def _preview(text: str) -> str:
    return text[:40] + ("..." if len(text) > 40 else "")


def pad_batch(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest example in the batch (dynamic padding); carries ``labels`` along."""
    if not examples:
        raise ValueError("cannot pad an empty batch")
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
        if "token_type_ids" in e:
            types[i, :n] = torch.tensor(e["token_type_ids"])
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    if "labels" in examples[0]:
        out["labels"] = torch.tensor([int(e["labels"]) for e in examples])
    return out
