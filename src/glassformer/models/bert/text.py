"""From text to BERT inputs: ``[CLS] tokens [SEP]`` (and pairs), truncation, dynamic padding.

The WordPiece tokenizer (``glassformer.tokenizers``) turns text into piece ids; this module adds
what BERT expects around them. An input longer than the position table is cut to fit with a
warning (``overflow="truncate"``, the default) or refused (``overflow="error"``): a silent cut
would hide that the end of a long review never reached the model.
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
        a = self.pieces(text)
        b = self.pieces(pair) if pair is not None else None
        room = self.max_len - (3 if b is not None else 2)
        total = len(a) + (len(b) if b is not None else 0)
        if total > room:
            preview = text[:40] + ("..." if len(text) > 40 else "")
            message = (
                f"text {preview!r} has {total} tokens but the model takes {room} (max_len={self.max_len} "
                "with [CLS]/[SEP])"
            )
            if self.overflow == "error":
                raise ValueError(message + "; shorten it or pass overflow='truncate'")
            warnings.warn(message + "; the end is cut off", stacklevel=2)
            while len(a) + (len(b) if b is not None else 0) > room:  # trim the longer segment first
                (a if b is None or len(a) >= len(b) else b).pop()
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return {"input_ids": ids, "token_type_ids": types}

    def batch(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Encode and pad several texts into model inputs."""
        return pad_batch([self.encode(t) for t in texts], self.pad_id)


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
