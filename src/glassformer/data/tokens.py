"""Token files for causal language modelling, read like nanoGPT: memory-mapped, random windows.

A prepared folder holds

- ``train.bin`` and ``val.bin``: the token ids of the text, one after another, as raw unsigned
  integers (``uint16`` when the vocabulary has at most 65,536 entries, else ``uint32``). No
  header: the file is the array, so it can be memory-mapped and any window read without loading
  the rest (a corpus larger than memory works the same);
- ``meta.json``: the dtype, vocabulary size, token counts and where the text came from;
- the tokenizer's own files (``tokenizer.json`` ...), so the ids can be decoded.

A training example is a random window of ``block_size + 1`` consecutive tokens: the first
``block_size`` are the input, the last ``block_size`` the targets (each position predicts the
next token). Drawing windows at random offsets, as nanoGPT's ``get_batch`` does, needs no
epochs or shuffling, and ``block_size`` can change without preparing the data again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glassformer.utils.config import write_text_atomic

FORMAT_VERSION = 1
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every id: 2 bytes per token for most vocabularies."""
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token files")


def write_tokens(path: str | os.PathLike[str], ids: Sequence[int] | np.ndarray, vocab_size: int) -> int:
    """Write ids as a raw array of :func:`token_dtype`; returns the number of tokens."""
    array = np.asarray(ids, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"{path}: ids must lie in [0, {vocab_size}), got [{array.min()}, {array.max()}]")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    array.astype(token_dtype(vocab_size)).tofile(tmp)
    os.replace(tmp, path)
    return int(array.size)


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    write_text_atomic(directory / "meta.json", json.dumps({"format": FORMAT_VERSION, **meta}, indent=2) + "\n")


class TokenData:
    """A prepared folder: ``train.bin`` / ``val.bin`` memory-mapped, plus ``meta.json``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{meta_path}: not found; prepare the folder with `glassformer data prepare --out {self.directory}`"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT_VERSION}")
        self.vocab_size: int = int(self.meta["vocab_size"])
        dtype = np.dtype(self.meta["dtype"])
        self.splits: dict[str, np.ndarray] = {}
        for split in SPLITS:
            path = self.directory / f"{split}.bin"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: token file missing")
            expected = int(self.meta[f"{split}_tokens"])
            if path.stat().st_size != expected * dtype.itemsize:
                raise ValueError(
                    f"{path}: {path.stat().st_size} bytes, but meta.json records {expected} tokens of "
                    f"{dtype.name}; the folder is damaged or half written: prepare it again"
                )
            self.splits[split] = np.memmap(path, dtype=dtype, mode="r")

    def __len__(self) -> int:
        return len(self.splits["train"])

    def tokenizer(self) -> Any:
        """The tokenizer saved beside the token files."""
        from glassformer.tokenizers import load_tokenizer

        return load_tokenizer(self.directory)

    def get_batch(
        self, split: str, batch_size: int, block_size: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``batch_size`` random windows: ``input_ids`` and ``targets`` (the same window shifted by one)."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; expected one of {list(self.splits)}")
        data = self.splits[split]
        if len(data) <= block_size:
            raise ValueError(
                f"the {split} split has {len(data)} tokens, too few for a window of block_size={block_size} "
                "plus one target; use a smaller block_size or more text"
            )
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
        windows = data[starts[:, None] + np.arange(block_size + 1)]  # (B, T+1) gathered from the memmap
        windows = torch.from_numpy(windows.astype(np.int64))
        return {"input_ids": windows[:, :-1], "targets": windows[:, 1:]}

    def batch_fn(self, batch_size: int, block_size: int) -> Callable[[str, int, torch.Generator], dict[str, Tensor]]:
        """``get_batch(split, step, generator)`` for the training engine: ``"eval"`` reads ``val.bin``."""

        def get_batch(split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
            return self.get_batch("val" if split == "eval" else split, batch_size, block_size, generator)

        return get_batch
