"""Before BPE: the byte-to-unicode table and the regex pre-tokenizers (GPT-2, cl100k, custom).

Byte-level BPE never merges across the pieces a regex cuts the text into, so ``" dog."`` can
become ``" dog"`` + ``"."`` but never ``"g."``. The regex is therefore part of the vocabulary:
a tokenizer only gives the ids its merges were learned with when it splits the text the same way.

``PATTERNS`` holds the named ones:

- ``"gpt2"``: GPT-2's pattern: contractions, runs of letters, of digits, of other symbols, each
  with at most one leading space, and whitespace (the last space of a run goes to the next word).
- ``"cl100k"``: the newer pattern of GPT-4's cl100k and Llama 3: case-insensitive contractions,
  digits in groups of at most three, newlines kept apart from other whitespace.
- ``"smollm"``: SmolLM/StarCoder-style: every digit on its own, then the GPT-2 pattern.

A custom pre-tokenizer is one regex or a list of them applied in turn, each cutting the pieces
of the previous one (this is how the ``tokenizers`` library composes ``Split`` and ``Digits``
steps). Text a regex does not match stays a piece of its own, as in the ``tokenizers`` library's
``Split(behavior="isolated")``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import regex

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The form Llama 3's tokenizer.json uses; tiktoken's cl100k string is a possessive rewrite of it
# with the same result, but its ``$`` means "end of line" in the ``tokenizers`` library's regex
# engine, so this spelling is the one both engines read alike.
CL100K_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PATTERNS: dict[str, tuple[str, ...]] = {
    "gpt2": (GPT2_PATTERN,),
    "cl100k": (CL100K_PATTERN,),
    "smollm": (r"\p{N}", GPT2_PATTERN),
}


@cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to 256 printable characters.

    BPE vocab files are text, and a token may hold any bytes (half a UTF-8 character, a control
    byte). So each byte gets a visible stand-in: printable Latin-1 bytes stand for themselves, the
    others (space, control bytes, ...) are moved up to U+0100 and beyond, in byte order. That is
    why a space shows up as ``Ġ`` (U+0120) in GPT-2's ``vocab.json``.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, str] = {}
    extra = 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


@cache
def unicode_to_bytes() -> dict[str, int]:
    return {char: byte for byte, char in bytes_to_unicode().items()}


def token_to_bytes(token: str) -> bytes | None:
    """The bytes a vocabulary token stands for, or None when it is not in byte-to-unicode spelling."""
    table = unicode_to_bytes()
    try:
        return bytes(table[char] for char in token)
    except KeyError:
        return None


def bytes_to_token(data: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[byte] for byte in data)


@dataclass(frozen=True)
class Step:
    """One pre-tokenization step: maybe prepend a space, then cut each piece with ``pattern``."""

    pattern: str | None
    add_prefix_space: bool = False


@dataclass
class PreTokenizer:
    """Cuts text into the pieces BPE encodes one by one (and caches: pieces repeat a lot)."""

    steps: tuple[Step, ...]
    name: str | None = None  # the key in PATTERNS this came from, kept for saving
    _compiled: list[Any] = field(init=False, repr=False)
    _findall: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        compiled = []
        for step in self.steps:
            try:
                compiled.append(regex.compile(step.pattern) if step.pattern is not None else None)
            except regex.error as err:
                raise ValueError(f"pre-tokenizer pattern {step.pattern!r} is not a valid regex: {err}") from None
        self._compiled = compiled
        # GPT-2's and cl100k's patterns match every character, so alone they need no gap handling.
        covering = len(self.steps) == 1 and self.steps[0].pattern in (GPT2_PATTERN, CL100K_PATTERN)
        self._findall = compiled[0].findall if covering and not self.steps[0].add_prefix_space else None

    @classmethod
    def make(cls, pattern: str | Sequence[str] | PreTokenizer, add_prefix_space: bool = False) -> PreTokenizer:
        """From a name in PATTERNS, one regex, a list of regexes, or an existing PreTokenizer."""
        if isinstance(pattern, PreTokenizer):
            return pattern
        name = None
        if isinstance(pattern, str):
            name = pattern if pattern in PATTERNS else None
            patterns: Sequence[str] = PATTERNS.get(pattern, (pattern,))
        else:
            patterns = list(pattern)
            if not patterns or not all(isinstance(p, str) for p in patterns):
                raise ValueError(f"pattern must be a name in {sorted(PATTERNS)}, a regex or a list of regexes")
        steps = [Step(p) for p in patterns]
        if add_prefix_space:
            steps[-1] = Step(steps[-1].pattern, add_prefix_space=True)
        return cls(tuple(steps), name=name)

    def __call__(self, text: str) -> list[str]:
        if self._findall is not None:
            return self._findall(text)
        pieces = [text]
        for step, compiled in zip(self.steps, self._compiled):
            out: list[str] = []
            for piece in pieces:
                if step.add_prefix_space and not piece.startswith(" "):
                    piece = " " + piece
                if compiled is None:
                    out.append(piece)
                else:
                    out.extend(_split_isolated(compiled, piece))
            pieces = out
        return pieces


def _split_isolated(compiled: Any, text: str) -> list[str]:
    """Every match is a piece, and so is every stretch of text between matches."""
    found = compiled.findall(text)
    if sum(map(len, found)) == len(text):  # the usual case: the pattern covers all the text
        return found
    pieces: list[str] = []
    end = 0
    for match in compiled.finditer(text):
        if match.start() > end:
            pieces.append(text[end : match.start()])
        if match.end() > match.start():
            pieces.append(match.group())
        end = match.end()
    if end < len(text):
        pieces.append(text[end:])
    return pieces


# --- the tokenizers library's JSON for normalizers and pre-tokenizers ---------------------------

NORMALIZATION_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


def normalizer_from_json(data: dict[str, Any] | None, source: str) -> str | None:
    """A Unicode normalization form name (or None) from a ``normalizer`` entry.

    Byte-level BPE vocabularies use at most a Unicode normal form (Qwen uses NFC); anything else
    would change which text the ids stand for, so it is refused rather than silently skipped.
    """
    if data is None:
        return None
    kind = data.get("type")
    if kind in NORMALIZATION_FORMS:
        return kind
    if kind == "Sequence":
        forms = [normalizer_from_json(item, source) for item in data.get("normalizers", [])]
        forms = [f for f in forms if f]
        if len(forms) <= 1:
            return forms[0] if forms else None
    raise ValueError(f"{source}: normalizer {json_brief(data)} is not supported for byte-level BPE")


def normalize(text: str, form: str | None) -> str:
    return unicodedata.normalize(form, text) if form else text


def pretokenizer_from_json(data: dict[str, Any] | None, source: str) -> PreTokenizer:
    """Our PreTokenizer from a ``pre_tokenizer`` entry (ByteLevel, Split, Digits, Sequence)."""
    if data is None:
        raise ValueError(f"{source}: a byte-level BPE needs a ByteLevel pre-tokenizer, the file has none")
    items = data.get("pretokenizers", []) if data.get("type") == "Sequence" else [data]
    steps: list[Step] = []
    byte_level = False
    for item in items:
        kind = item.get("type")
        if kind == "ByteLevel":
            byte_level = True
            pattern = GPT2_PATTERN if item.get("use_regex", True) else None
            steps.append(Step(pattern, bool(item.get("add_prefix_space", False))))
        elif kind == "Split":
            if item.get("behavior") != "Isolated" or item.get("invert"):
                raise ValueError(f"{source}: pre-tokenizer {json_brief(item)}: only Split with behavior "
                                 "'Isolated' and invert false is supported")
            spec = item.get("pattern", {})
            if "Regex" in spec:
                steps.append(Step(spec["Regex"]))
            elif "String" in spec:
                steps.append(Step(regex.escape(spec["String"])))
            else:
                raise ValueError(f"{source}: pre-tokenizer {json_brief(item)} has no pattern")
        elif kind == "Digits":
            steps.append(Step(r"\p{N}" if item.get("individual_digits") else r"\p{N}+"))
        else:
            raise ValueError(f"{source}: pre-tokenizer type {kind!r} is not supported for byte-level BPE")
    if not byte_level:
        raise ValueError(f"{source}: a byte-level BPE needs a ByteLevel pre-tokenizer, found {json_brief(data)}")
    merged = _merge_prefix_only_steps(steps)
    patterns = tuple(s.pattern for s in merged)
    name = next((n for n, p in PATTERNS.items() if p == patterns and not any(s.add_prefix_space for s in merged)), None)
    return PreTokenizer(tuple(merged), name=name)


def _merge_prefix_only_steps(steps: list[Step]) -> list[Step]:
    """Drop a regex-less ByteLevel step that adds nothing (``Split(...) + ByteLevel(use_regex=False)``)."""
    return [s for s in steps if s.pattern is not None or s.add_prefix_space] or [Step(None)]


def pretokenizer_to_json(pre: PreTokenizer) -> dict[str, Any]:
    """The ``tokenizers`` library's spelling: Split steps, then a ByteLevel step for the byte mapping."""
    steps: list[dict[str, Any]] = []
    for step in pre.steps[:-1]:
        steps.append(_split_json(step))
    last = pre.steps[-1]
    if last.pattern == GPT2_PATTERN:
        byte_level = {"type": "ByteLevel", "add_prefix_space": last.add_prefix_space, "trim_offsets": True,
                      "use_regex": True}
        if not steps:
            return byte_level
    else:
        if last.pattern is not None:
            steps.append(_split_json(Step(last.pattern)))
        byte_level = {"type": "ByteLevel", "add_prefix_space": last.add_prefix_space, "trim_offsets": True,
                      "use_regex": False}
    return {"type": "Sequence", "pretokenizers": [*steps, byte_level]}


def _split_json(step: Step) -> dict[str, Any]:
    if step.add_prefix_space:
        raise ValueError("only the last pre-tokenization step can add a prefix space in tokenizer.json")
    return {"type": "Split", "pattern": {"Regex": step.pattern}, "behavior": "Isolated", "invert": False}


def json_brief(data: Any, limit: int = 120) -> str:
    text = str(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."
