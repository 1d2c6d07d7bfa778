"""One id per character: the tokenizer of the shakespeare_char model.

The vocabulary is the sorted set of characters in the training text, so ``"\\n"`` and ``" "`` come
first and the ids match nanoGPT's ``prepare.py`` for the same text (65 characters for
tinyshakespeare). A character outside the vocabulary is an error that names it: a character
model has no ``[UNK]`` to fall back on.

In ``tokenizer.json`` this is a ``WordLevel`` model behind a one-character ``Split``, so the
``tokenizers`` library (and the fast path) reads it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from glassformer.tokenizers import files
from glassformer.tokenizers.base import (
    Template,
    Tokenizer,
    TokenizerBackend,
    max_length_from_config,
    roles_from_config,
    special_tokens_from_json,
)

_ANY_CHARACTER = r"[\s\S]"  # "." misses newlines in the reference's regex engine


class CharTokenizer(Tokenizer):
    """Characters ``chars[i]`` <-> ids ``i``; optional special tokens get the ids after them."""

    kind = "char"

    def __init__(
        self,
        chars: Sequence[str],
        special_tokens: Sequence[str] | dict[str, int] = (),
        *,
        roles: dict[str, str] | None = None,
        template: Template | None = None,
        model_max_length: int | None = None,
        backend: TokenizerBackend = "pure",
    ) -> None:
        chars = list(chars)
        for position, char in enumerate(chars):
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"character vocabulary entry {position} is {char!r}, not one character")
        if len(set(chars)) != len(chars):
            raise ValueError("the character vocabulary has repeated characters")
        if not isinstance(special_tokens, dict):
            special_tokens = {token: len(chars) + i for i, token in enumerate(special_tokens)}
        super().__init__(special_tokens=special_tokens, template=template, roles=roles,
                         model_max_length=model_max_length, backend=backend)
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}
        self._vocab_all = {**self.stoi, **self.special_tokens}
        self._itos = {i: t for t, i in self._vocab_all.items()}

    @classmethod
    def from_text(cls, text: str, special_tokens: Sequence[str] = (), **options: Any) -> CharTokenizer:
        """The vocabulary of ``text``: its distinct characters, sorted (nanoGPT's ``prepare.py``)."""
        if not text:
            raise ValueError("cannot build a character vocabulary from empty text")
        return cls(sorted(set(text)), special_tokens, **options)

    def _encode_ordinary(self, text: str) -> list[int]:
        try:
            return list(map(self.stoi.__getitem__, text))
        except KeyError as err:
            char = err.args[0]
            raise ValueError(f"character {char!r} (U+{ord(char):04X}) at position {text.index(char)} "
                             "is not in the vocabulary") from None

    def _decode(self, ids: list[int]) -> str:
        return "".join(map(self._itos.__getitem__, ids))

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab_all

    def id_to_token(self, index: int) -> str | None:
        return self._itos.get(index)

    def to_hf_json(self) -> dict[str, Any]:
        return self._hf_json_layout(
            normalizer=None,
            pre_tokenizer={"type": "Split", "pattern": {"Regex": _ANY_CHARACTER}, "behavior": "Isolated",
                           "invert": False},
            decoder={"type": "Fuse"},
            # WordLevel wants an unknown token name; it is not in the vocabulary, so an unknown
            # character is an error there too.
            model={"type": "WordLevel", "vocab": dict(self.stoi), "unk_token": "<unk>"},
        )

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "tokenizer.json",
                     config: dict[str, Any] | None = None) -> CharTokenizer:
        model = data.get("model") or {}
        if model.get("type") != "WordLevel":
            raise ValueError(f"{source}: model type {model.get('type')!r} is not a character-level WordLevel")
        vocab = files.check_vocab(model.get("vocab"), f"{source} (model.vocab)")
        ordered = sorted(vocab.items(), key=lambda item: item[1])
        if [i for _, i in ordered] != list(range(len(ordered))) or any(len(c) != 1 for c, _ in ordered):
            raise ValueError(f"{source}: a character vocabulary maps single characters to ids 0..n-1")
        specials = special_tokens_from_json(data, source)
        config = config or {}
        return cls([c for c, _ in ordered], specials, roles=roles_from_config(config, specials),
                   template=Template.from_json(data.get("post_processor"), source),
                   model_max_length=max_length_from_config(config))
