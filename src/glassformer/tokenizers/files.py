"""Reading and writing the plain files vocabularies travel in, with errors that name file and line.

These functions know nothing about tokenizer classes: they turn a file into plain Python data
(``dict[str, int]``, a list of merge pairs, ``dict[bytes, int]``) and back. A vocabulary file is
usually written by some other program, so every reader checks what it reads and says exactly
where a problem is (``merges.txt, line 7: expected two tokens separated by one space``) instead
of failing later with a ``KeyError`` deep inside encoding.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from glassformer.utils.config import write_text_atomic

PathLike = str | os.PathLike[str]


class VocabFileError(ValueError):
    """A vocabulary, merges or tokenizer file is missing a part or is malformed (the message says where)."""


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        kind = "a folder, not a file" if path.is_dir() else "no such file"
        raise FileNotFoundError(f"{path}: {kind}")
    return path


def decode_utf8(data: bytes, source: str) -> str:
    """``data`` as text; invalid UTF-8 is an error naming the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise VocabFileError(
            f"{source}, line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column})"
        ) from None


def read_text(path: PathLike) -> str:
    """A UTF-8 text file, whole. Windows line ends are kept as they are (they are part of the text)."""
    path = _existing(path)
    return decode_utf8(path.read_bytes(), str(path))


def read_lines(path: PathLike) -> list[str]:
    """The lines of a UTF-8 file without their line ends (``\\n`` or ``\\r\\n``)."""
    text = read_text(path)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start an empty one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_corpus(paths: Iterable[PathLike]) -> Iterator[str]:
    """The text of each file in turn, for the trainers; a bad file is named before any work is lost."""
    paths = [_existing(p) for p in paths]
    for path in paths:
        yield read_text(path)


def read_json(path: PathLike) -> Any:
    path = _existing(path)
    text = decode_utf8(path.read_bytes(), str(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise VocabFileError(f"{path}, line {err.lineno}: malformed JSON ({err.msg})") from None


def write_json(path: PathLike, data: Any) -> None:
    write_text_atomic(Path(path), json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def check_vocab(vocab: Any, source: str) -> dict[str, int]:
    """A ``{token: id}`` mapping with string keys and non-negative integer ids."""
    if not isinstance(vocab, dict):
        raise VocabFileError(f"{source}: expected a JSON object mapping tokens to ids, got {type(vocab).__name__}")
    for token, index in vocab.items():
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise VocabFileError(f"{source}: token {token!r} has id {index!r}; ids must be integers >= 0")
    return vocab


# --- GPT-2: vocab.json + merges.txt -------------------------------------------------------------


def read_vocab_json(path: PathLike) -> dict[str, int]:
    return check_vocab(read_json(path), str(path))


def read_merges_txt(path: PathLike) -> tuple[list[tuple[str, str]], list[int]]:
    """The merges in rank order and, for error messages later on, the line each one came from.

    The format is one merge per line, the two tokens separated by one space; an optional first
    line ``#version: ...`` is a header. Tokens never contain a space in byte-level vocabularies
    (the space byte is spelled ``Ġ``), so a line with more or fewer than two parts is corrupt.
    """
    merges: list[tuple[str, str]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(read_lines(path), start=1):
        if number == 1 and line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise VocabFileError(
                f"{path}, line {number}: expected two tokens separated by one space, got {line!r}"
            )
        merges.append((parts[0], parts[1]))
        line_numbers.append(number)
    return merges, line_numbers


def write_vocab_json(path: PathLike, vocab: dict[str, int]) -> None:
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    write_text_atomic(Path(path), json.dumps(ordered, ensure_ascii=False) + "\n")


def write_merges_txt(path: PathLike, merges: Iterable[tuple[str, str]]) -> None:
    write_text_atomic(Path(path), "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


# --- BERT: vocab.txt ---------------------------------------------------------------------------


def read_vocab_txt(path: PathLike) -> dict[str, int]:
    """One token per line; a token's id is its line number minus one.

    A repeated token keeps its last line's id, as BERT's own loader does (a few published
    vocabularies contain duplicates, and their ids must still line up with the embedding rows).
    """
    vocab: dict[str, int] = {}
    lines = read_lines(path)
    if not lines:
        raise VocabFileError(f"{path}: the vocabulary file is empty")
    for index, token in enumerate(lines):
        if token == "":
            raise VocabFileError(f"{path}, line {index + 1}: empty token")
        vocab[token] = index
    return vocab


def write_vocab_txt(path: PathLike, vocab: dict[str, int]) -> None:
    """Tokens in id order, one per line; the ids must be 0..n-1 without gaps (the format has no ids)."""
    ordered = sorted(vocab.items(), key=lambda item: item[1])
    if [index for _, index in ordered] != list(range(len(ordered))):
        raise ValueError(f"{path}: vocab.txt stores ids as line numbers, so they must be 0..{len(ordered) - 1}")
    write_text_atomic(Path(path), "".join(token + "\n" for token, _ in ordered))


# --- tiktoken: base64(token bytes) rank --------------------------------------------------------


def read_tiktoken(path: PathLike) -> dict[bytes, int]:
    """tiktoken's ``.tiktoken`` file: per line the base64 of a token's bytes, a space and its rank."""
    ranks: dict[bytes, int] = {}
    seen_ranks: dict[int, int] = {}
    lines = read_lines(path)
    if not lines:
        raise VocabFileError(f"{path}: the rank file is empty")
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise VocabFileError(f"{path}, line {number}: expected 'base64-token rank', got {line!r}")
        try:
            token = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise VocabFileError(f"{path}, line {number}: {parts[0]!r} is not valid base64") from None
        if not parts[1].isdigit():
            raise VocabFileError(f"{path}, line {number}: rank {parts[1]!r} is not a non-negative integer")
        rank = int(parts[1])
        if token in ranks:
            raise VocabFileError(f"{path}, line {number}: token {token!r} appears twice")
        if rank in seen_ranks:
            raise VocabFileError(f"{path}, line {number}: rank {rank} already used on line {seen_ranks[rank]}")
        ranks[token] = rank
        seen_ranks[rank] = number
    return ranks

