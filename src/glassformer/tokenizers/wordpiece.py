"""WordPiece, BERT's tokenizer: clean and split the text into words, then cover each word greedily.

1. ``BertNormalizer``: drop control characters, turn every whitespace into a space, put spaces
   around CJK ideographs (Chinese has no spaces, so each ideograph becomes a word), strip accents
   (decompose, drop the nonspacing marks: ``café`` -> ``cafe``) and lowercase, each an option.
2. Words: split at whitespace, and make each punctuation character a word of its own.
3. Each word is covered left to right by the longest vocabulary entry that fits; pieces after
   the first are looked up with the ``##`` prefix (``unaffable`` -> ``un ##aff ##able``). A word
   that cannot be covered, or that is longer than ``max_chars_per_word``, becomes ``[UNK]`` whole.

Build one with ``WordPiece.from_vocab_file("vocab.txt", lowercase=True)``, from a model folder
with ``WordPiece.from_folder(path)`` (``tokenizer.json``, else ``vocab.txt`` and the
``do_lower_case`` of ``tokenizer_config.json``), or learn one with ``train_wordpiece``.
The ids are those of ``BertTokenizerFast`` on the same vocabulary, character classes included
(see ``bert_unicode``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any

import regex

from glassformer.tokenizers import bert_unicode, files
from glassformer.tokenizers.base import (
    PathLike,
    Template,
    Tokenizer,
    TokenizerBackend,
    max_length_from_config,
    roles_from_config,
    special_tokens_from_json,
)
from glassformer.tokenizers.pretokenize import json_brief

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_BERT_ROLES = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"}
# The ideograph blocks BERT splits into single characters (the reference's list, which has
# U+2B920, not U+2B820, as the start of its sixth range).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _ranges(pairs: Iterable[tuple[int, int]]) -> str:
    """Ranges of code points as the inside of a regex character class."""
    return "".join(f"\\U{a:08x}-\\U{b:08x}" if a != b else f"\\U{a:08x}" for a, b in pairs)


@cache
def _patterns() -> dict[str, Any]:
    """The compiled character classes (built once, on first use)."""
    v1 = regex.V1
    ascii_punct = r"!-/:-@\[-`{-~"
    punct = (f"[[\\p{{P}}{ascii_punct}{_ranges(bert_unicode.EXTRA_PUNCTUATION)}]"
             f"--[{_ranges(bert_unicode.NOT_PUNCTUATION)}]]")
    return {
        "control": regex.compile(
            f"[[\\x00\\ufffd\\p{{Cc}}\\p{{Cf}}\\p{{Co}}\\p{{Cs}}]--[\\t\\n\\r{_ranges(bert_unicode.NOT_CONTROL)}]]", v1),
        "whitespace": regex.compile(r"\p{White_Space}"),
        "cjk": regex.compile(f"[{_ranges(CJK_RANGES)}]"),
        "mark": regex.compile(
            f"[[\\p{{Mn}}{_ranges(bert_unicode.EXTRA_NONSPACING_MARK)}]--[{_ranges(bert_unicode.NOT_NONSPACING_MARK)}]]", v1),
        # a word is a run of characters that are neither whitespace nor punctuation
        "word": regex.compile(f"[^\\p{{White_Space}}{punct}]+|{punct}", v1),
    }


@dataclass(frozen=True)
class BertNormalizer:
    """BERT's text cleanup. ``strip_accents=None`` strips exactly when lowercasing, like BERT."""

    clean_text: bool = True
    handle_chinese_chars: bool = True
    strip_accents: bool | None = None
    lowercase: bool = True

    def __call__(self, text: str) -> str:
        if text.isascii():  # the common case, with the same result for a fraction of the work
            if self.clean_text:
                text = text.translate(_ASCII_CLEAN)
            return text.lower() if self.lowercase else text
        p = _patterns()
        if self.clean_text:
            text = p["whitespace"].sub(" ", p["control"].sub("", text))
        if self.handle_chinese_chars:
            text = p["cjk"].sub(r" \g<0> ", text)
        if self.strip_accents or (self.strip_accents is None and self.lowercase):
            text = p["mark"].sub("", unicodedata.normalize("NFD", text))
        if self.lowercase:
            # Character by character, like the reference: str.lower() alone would turn a
            # word-final capital sigma into "ς", which per-character lowercasing does not.
            text = text.lower() if "Σ" not in text else "".join(c.lower() for c in text)
        return text

    def to_json(self) -> dict[str, Any]:
        return {"type": "BertNormalizer", "clean_text": self.clean_text,
                "handle_chinese_chars": self.handle_chinese_chars, "strip_accents": self.strip_accents,
                "lowercase": self.lowercase}


def split_words(text: str) -> list[str]:
    """BERT's pre-tokenizer: whitespace separates words, each punctuation character is a word."""
    if text.isascii():
        return _ASCII_WORD.findall(text)
    return _patterns()["word"].findall(text)


# ASCII has no CJK ideographs and no accents (its NFD is itself): cleaning deletes the control
# characters and turns tab, newline and carriage return into spaces (\v and \f are controls).
_ASCII_CLEAN = {c: None for c in [*range(0x00, 0x20), 0x7F] if chr(c) not in "\t\n\r"} | {ord(c): " " for c in "\t\n\r"}
_ASCII_WORD = regex.compile(r"[^\t\n\v\f\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]")


class _WordCache(dict):
    def __init__(self, owner: WordPiece) -> None:
        super().__init__()
        self.owner = owner

    def __missing__(self, word: str) -> list[int]:
        ids = self.owner._cover(word)
        if len(self) >= 200_000:
            self.clear()
        self[word] = ids
        return ids


class WordPiece(Tokenizer):
    """BERT's WordPiece over ``vocab`` (``{token: id}``, continuation pieces spelled ``##piece``)."""

    kind = "wordpiece"
    returns_token_type_ids = True

    def __init__(
        self,
        vocab: dict[str, int],
        *,
        unk_token: str = "[UNK]",
        continuing_prefix: str = "##",
        max_chars_per_word: int = 100,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        clean_text: bool = True,
        handle_chinese_chars: bool = True,
        special_tokens: dict[str, int] | None = None,
        template: Template | None = None,
        roles: dict[str, str] | None = None,
        model_max_length: int | None = None,
        cleanup_decoded: bool = True,
        backend: TokenizerBackend = "pure",
    ) -> None:
        vocab = files.check_vocab(dict(vocab), "vocab")
        if unk_token not in vocab:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary")
        if special_tokens is None:  # BERT's five, those the vocabulary has
            special_tokens = {t: vocab[t] for t in BERT_SPECIAL_TOKENS if t in vocab}
        if template is None and "[CLS]" in special_tokens and "[SEP]" in special_tokens:
            template = Template.bert()
        if roles is None:
            roles = {role: tok for role, tok in _BERT_ROLES.items() if tok in special_tokens}
        super().__init__(special_tokens=special_tokens, template=template, roles=roles,
                         model_max_length=model_max_length, backend=backend)
        self.token_ids = vocab
        self.unk_token = unk_token
        self.continuing_prefix = continuing_prefix
        self.max_chars_per_word = max_chars_per_word
        self.normalizer = BertNormalizer(clean_text, handle_chinese_chars, strip_accents, lowercase)
        self.cleanup_decoded = cleanup_decoded
        self._vocab_all = {**vocab, **self.special_tokens}
        self._id_token: dict[int, str] = {i: t for t, i in self._vocab_all.items()}
        self._unk_id = vocab[unk_token]
        self._longest = max(map(len, vocab))  # no piece is longer, so no need to try longer ones
        self._cache = _WordCache(self)

    @property
    def lowercase(self) -> bool:
        return self.normalizer.lowercase

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_vocab_file(cls, path: PathLike, lowercase: bool = True, **options: Any) -> WordPiece:
        """BERT's ``vocab.txt`` (one token per line, id = line number - 1)."""
        return cls(files.read_vocab_txt(path), lowercase=lowercase, **options)

    @classmethod
    def from_folder(cls, folder: PathLike) -> WordPiece:
        """A model folder: ``tokenizer.json`` when present, else ``vocab.txt`` with the settings of
        ``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``, ``tokenize_chinese_chars``)."""
        folder = Path(folder)
        config_path = folder / "tokenizer_config.json"
        if (folder / "tokenizer.json").is_file():
            config = files.read_json(config_path) if config_path.is_file() else {}
            return cls.from_hf_json(files.read_json(folder / "tokenizer.json"), str(folder / "tokenizer.json"), config)
        if not (folder / "vocab.txt").is_file():
            raise FileNotFoundError(f"{folder}: neither tokenizer.json nor vocab.txt")
        return cls.from_vocab_and_config(folder / "vocab.txt")

    @classmethod
    def from_vocab_and_config(cls, vocab_txt: PathLike, config_json: PathLike | None = None) -> WordPiece:
        """``vocab.txt`` with the settings of a ``tokenizer_config.json`` (by default the one beside
        it; BERT's defaults when there is none)."""
        vocab_txt = Path(vocab_txt)
        config_path = Path(config_json) if config_json is not None else vocab_txt.parent / "tokenizer_config.json"
        config = files.read_json(config_path) if config_path.is_file() else {}
        unk = config.get("unk_token", "[UNK]")
        return cls(
            files.read_vocab_txt(vocab_txt),
            unk_token=unk.get("content") if isinstance(unk, dict) else unk,
            lowercase=bool(config.get("do_lower_case", True)),
            strip_accents=config.get("strip_accents"),
            handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
            model_max_length=max_length_from_config(config),
        )

    # ---- encoding -----------------------------------------------------------------------------

    def _encode_ordinary(self, text: str) -> list[int]:
        words = split_words(self.normalizer(text))
        return list(chain.from_iterable(map(self._cache.__getitem__, words)))

    def _cover(self, word: str) -> list[int]:
        """Greedy longest-match-first; one uncoverable spot makes the whole word ``[UNK]``."""
        if len(word) > self.max_chars_per_word:
            return [self._unk_id]
        vocab, prefix = self.token_ids, self.continuing_prefix
        ids: list[int] = []
        start, n = 0, len(word)
        while start < n:
            end = min(n, start + self._longest)
            while end > start:
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                index = vocab.get(piece)
                if index is not None:
                    ids.append(index)
                    break
                end -= 1
            else:
                return [self._unk_id]
            start = end
        return ids

    def clear_cache(self) -> None:
        """Forget the cached words (for timing a cold start; encoding never needs it)."""
        self._cache.clear()

    # ---- decoding -----------------------------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        """Pieces joined with spaces, ``##`` pieces glued to the previous one; then the reference's
        cleanup of spaces before punctuation and inside English contractions."""
        out: list[str] = []
        prefix = self.continuing_prefix
        for position, index in enumerate(ids):
            token = self._id_token[index]
            if position:
                token = token[len(prefix):] if token.startswith(prefix) else " " + token
            if self.cleanup_decoded:
                token = _cleanup(token)
            out.append(token)
        return "".join(out)

    # ---- vocabulary ---------------------------------------------------------------------------

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab_all

    def id_to_token(self, index: int) -> str | None:
        return self._id_token.get(index)

    # ---- files --------------------------------------------------------------------------------

    def to_hf_json(self) -> dict[str, Any]:
        return self._hf_json_layout(
            normalizer=self.normalizer.to_json(),
            pre_tokenizer={"type": "BertPreTokenizer"},
            decoder={"type": "WordPiece", "prefix": self.continuing_prefix, "cleanup": self.cleanup_decoded},
            model={
                "type": "WordPiece",
                "unk_token": self.unk_token,
                "continuing_subword_prefix": self.continuing_prefix,
                "max_input_chars_per_word": self.max_chars_per_word,
                "vocab": dict(sorted(self.token_ids.items(), key=lambda item: item[1])),
            },
        )

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "tokenizer.json",
                     config: dict[str, Any] | None = None) -> WordPiece:
        model = data.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ValueError(f"{source}: model type {model.get('type')!r} is not WordPiece")
        norm = data.get("normalizer")
        if norm is None:
            norm = {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False, "lowercase": False}
        elif norm.get("type") != "BertNormalizer":
            raise ValueError(f"{source}: normalizer {json_brief(norm)} is not supported (only BertNormalizer)")
        pre = data.get("pre_tokenizer")
        if not pre or pre.get("type") != "BertPreTokenizer":
            raise ValueError(f"{source}: pre-tokenizer {json_brief(pre)} is not supported (only BertPreTokenizer)")
        decoder = data.get("decoder") or {}
        specials = special_tokens_from_json(data, source)
        config = config or {}
        return cls(
            files.check_vocab(model.get("vocab"), f"{source} (model.vocab)"),
            unk_token=model.get("unk_token", "[UNK]"),
            continuing_prefix=model.get("continuing_subword_prefix", "##"),
            max_chars_per_word=int(model.get("max_input_chars_per_word", 100)),
            lowercase=bool(norm.get("lowercase", True)),
            strip_accents=norm.get("strip_accents"),
            clean_text=bool(norm.get("clean_text", True)),
            handle_chinese_chars=bool(norm.get("handle_chinese_chars", True)),
            special_tokens=specials,
            template=Template.from_json(data.get("post_processor"), source),
            roles=roles_from_config(config, specials) or None,
            model_max_length=max_length_from_config(config),
            cleanup_decoded=bool(decoder.get("cleanup", True)),
        )

    def _config_extras(self) -> dict[str, Any]:
        return {"tokenizer_class": "BertTokenizer", "do_lower_case": self.lowercase,
                "strip_accents": self.normalizer.strip_accents,
                "tokenize_chinese_chars": self.normalizer.handle_chinese_chars}

    def _save_extra_files(self, directory: Path) -> None:
        if sorted(self.token_ids.values()) == list(range(len(self.token_ids))):  # vocab.txt has no gaps
            files.write_vocab_txt(directory / "vocab.txt", self.token_ids)


def _cleanup(token: str) -> str:
    for dirty, clean in _CLEANUPS:
        token = token.replace(dirty, clean)
    return token


_CLEANUPS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
    (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)

