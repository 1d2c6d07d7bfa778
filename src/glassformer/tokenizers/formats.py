"""``load_tokenizer(path)``: open a tokenizer from whatever files a folder (or a path) holds.

Recognized, in this order for a folder:

- ``tokenizer.json`` (the ``tokenizers`` library's format, what glassformer's ``save`` writes):
  BPE -> ``ByteLevelBPE`` (``CLIPTokenizer`` when the BPE marks word ends with ``</w>``), WordPiece -> ``WordPiece``, one-character WordLevel -> ``CharTokenizer``;
  ``tokenizer_config.json`` beside it names the special tokens' roles (pad, eos, ...);
- ``vocab.json`` + ``merges.txt`` (GPT-2) -> ``ByteLevelBPE``;
- ``vocab.txt`` (BERT, with ``tokenizer_config.json``'s ``do_lower_case``) -> ``WordPiece``;
- one ``*.tiktoken`` rank file -> ``ByteLevelBPE`` (GPT-2's pattern and ``<|endoftext|>``).

A file path is read by its name: ``*.json`` as ``tokenizer.json``, ``*.tiktoken``, ``vocab.txt``,
or ``vocab.json`` (with ``merges.txt`` beside it).

This dispatch lives here rather than in ``base`` because it names every subclass, and the
subclasses import ``base``: the base class knows none of its children.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, overload

from glassformer.tokenizers import files
from glassformer.tokenizers.base import PathLike, Tokenizer
from glassformer.tokenizers.bpe import ByteLevelBPE
from glassformer.tokenizers.char import CharTokenizer
from glassformer.tokenizers.clip import WORD_END, CLIPTokenizer
from glassformer.tokenizers.wordpiece import WordPiece

T = TypeVar("T", bound=Tokenizer)
_MODEL_CLASSES: dict[str, type[Tokenizer]] = {"BPE": ByteLevelBPE, "WordPiece": WordPiece, "WordLevel": CharTokenizer}


def from_tokenizer_json(path: PathLike, config: dict[str, Any] | None = None) -> Tokenizer:
    """A ``tokenizer.json``; ``config`` is the parsed ``tokenizer_config.json`` (read from beside
    the file when not given)."""
    path = Path(path)
    data = files.read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise files.VocabFileError(f"{path}: not a tokenizer.json (no 'model' object)")
    if config is None:
        config_path = path.parent / "tokenizer_config.json"
        config = files.read_json(config_path) if config_path.is_file() else {}
    kind = data["model"].get("type")
    if kind not in _MODEL_CLASSES:
        raise ValueError(f"{path}: model type {kind!r} is not supported (glassformer reads BPE, WordPiece "
                         "and character-level WordLevel)")
    if kind == "BPE" and data["model"].get("end_of_word_suffix") == WORD_END:
        return CLIPTokenizer.from_hf_json(data, str(path), config)
    return _MODEL_CLASSES[kind].from_hf_json(data, str(path), config)


@overload
def load_tokenizer(path: PathLike) -> Tokenizer: ...


@overload
def load_tokenizer(path: PathLike, kind: type[T]) -> T: ...


def load_tokenizer(path: PathLike, kind: type[Tokenizer] = Tokenizer) -> Tokenizer:
    """The tokenizer stored at ``path`` (a folder or a file); see the module docstring for formats.

    ``kind`` (``ByteLevelBPE``, ...) checks what the files hold, for a caller that needs one kind.
    """
    tokenizer = _open(Path(path))
    if not isinstance(tokenizer, kind):
        raise ValueError(f"{path} holds a {type(tokenizer).__name__}, not a {kind.__name__}: point at a "
                         f"{kind.__name__}'s files, or pass kind={type(tokenizer).__name__}")
    return tokenizer


def _open(path: Path) -> Tokenizer:
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return from_tokenizer_json(path / "tokenizer.json")
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return ByteLevelBPE.from_files(path / "vocab.json", path / "merges.txt")
        if (path / "vocab.txt").is_file():
            return WordPiece.from_folder(path)
        ranks = sorted(path.glob("*.tiktoken"))
        if len(ranks) == 1:
            return ByteLevelBPE.from_tiktoken(ranks[0])
        raise FileNotFoundError(f"{path}: no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt, "
                                "vocab.txt, one *.tiktoken file)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".tiktoken":
        return ByteLevelBPE.from_tiktoken(path)
    if path.name == "vocab.txt":
        return WordPiece.from_vocab_and_config(path)
    if path.name == "vocab.json":
        merges = path.parent / "merges.txt"
        if not merges.is_file():
            raise FileNotFoundError(f"{path}: a BPE vocab.json needs merges.txt beside it ({merges} is missing)")
        return ByteLevelBPE.from_files(path, merges)
    if path.suffix == ".json":
        return from_tokenizer_json(path)
    raise ValueError(f"{path}: unknown tokenizer file (expected tokenizer.json, vocab.json, vocab.txt or *.tiktoken)")
