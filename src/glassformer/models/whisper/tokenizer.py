"""Whisper's tokenizer: GPT-2's byte-level BPE plus the control tokens that steer the decoder.

The text part is an ordinary ``tokenizer.json`` BPE, read by ``glassformer.tokenizers``. What
Whisper adds sits above the BPE ids, in this order::

    <|endoftext|>  <|startoftranscript|>  <|en|> ... <|su|>  <|translate|> <|transcribe|>
    <|startoflm|>  <|startofprev|>  <|nocaptions|>  <|notimestamps|>  <|0.00|> ... <|30.00|>

- The **prompt** (:meth:`WhisperTokenizer.sot_sequence`) tells the decoder what to do:
  ``<|startoftranscript|>``, then (multilingual models only) the language and the task, then
  ``<|notimestamps|>`` unless timestamps are wanted. English-only models (tiny.en: a vocabulary of
  51864, one short of the multilingual 51865) were trained without language and task tokens, so
  their prompt is ``<|startoftranscript|><|notimestamps|>``.
- **Timestamp tokens** are not in ``tokenizer.json``: they are every id after
  ``<|notimestamps|>`` up to the model's vocabulary size, ``<|0.00|>`` in steps of 0.02 s.
- **Suppressed tokens** are ids the decoder must never emit: symbols that are not speech
  (``"#()*+/``, music notes, ``-- ))``; :meth:`non_speech_tokens`) and the control tokens that
  only the prompt may hold. At the first step, a blank and ``<|endoftext|>`` are also suppressed,
  so the transcript neither starts with a space token nor is empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from glassformer.tokenizers import ByteLevelBPE, load_tokenizer
from glassformer.utils.suggest import did_you_mean

Task = Literal["transcribe", "translate"]
TIME_STEP = 0.02  # seconds between timestamp tokens
MULTILINGUAL_VOCAB = 51865  # the smallest multilingual vocabulary; English-only models have 51864

_CONTROL = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
_LANGUAGE = re.compile(r"<\|([a-z]{2,3})\|>")
# Symbols Whisper never transcribes (speaker tags, markup, music); a symbol counts when it is one
# token alone or after a space. Music notes are suppressed by their first token even when split.
_SYMBOLS = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + (
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split())
_MUSIC = "♩♪♫♬♭♮♯"


class WhisperTokenizer:
    """The BPE of ``tokenizer.json`` with Whisper's control and timestamp tokens around it."""

    def __init__(self, bpe: ByteLevelBPE, vocab_size: int | None = None) -> None:
        missing = [token for token in _CONTROL if bpe.token_to_id(token) is None]
        if missing:
            raise ValueError(f"not a Whisper tokenizer: no {', '.join(missing)} among the special tokens")
        self.bpe = bpe
        self.ids = {token: bpe.token_to_id(token) for token in _CONTROL}
        self.timestamp_begin = self.ids["<|notimestamps|>"] + 1
        self.vocab_size = vocab_size if vocab_size is not None else self.timestamp_begin + 1501
        if self.vocab_size <= self.timestamp_begin:
            raise ValueError(f"vocab_size={vocab_size} leaves no timestamp tokens (they start at "
                             f"{self.timestamp_begin}); pass the model's vocab_size")
        self.languages = {m.group(1): i for token, i in bpe.special_tokens.items() if (m := _LANGUAGE.fullmatch(token))}

    @classmethod
    def from_folder(cls, folder: str | Path, vocab_size: int | None = None) -> WhisperTokenizer:
        """From a model folder's ``tokenizer.json``; the vocabulary size (hence the timestamps) from
        ``vocabulary.txt`` (CTranslate2's list, one token a line) when it is there."""
        folder = Path(folder)
        bpe = load_tokenizer(folder / "tokenizer.json", ByteLevelBPE)
        listing = folder / "vocabulary.txt"
        if vocab_size is None and listing.is_file():
            vocab_size = len(listing.read_text(encoding="utf-8").splitlines())
        return cls(bpe, vocab_size)

    # ---- ids ----------------------------------------------------------------------------------

    @property
    def eot(self) -> int:
        return self.ids["<|endoftext|>"]

    @property
    def sot(self) -> int:
        return self.ids["<|startoftranscript|>"]

    @property
    def no_timestamps(self) -> int:
        return self.ids["<|notimestamps|>"]

    @property
    def is_multilingual(self) -> bool:
        return self.vocab_size >= MULTILINGUAL_VOCAB

    def timestamp_token(self, index: int) -> str:
        """``<|0.00|>`` for the first timestamp id, 0.02 s more for each next one."""
        return f"<|{index * TIME_STEP:.2f}|>"

    @property
    def timestamp_tokens(self) -> dict[str, int]:
        return {self.timestamp_token(i - self.timestamp_begin): i for i in range(self.timestamp_begin, self.vocab_size)}

    def sot_sequence(self, language: str | None = None, task: Task = "transcribe", timestamps: bool = False) -> list[int]:
        """The decoder's prompt: ``<|startoftranscript|>`` [language, task] [``<|notimestamps|>``]."""
        if task not in ("transcribe", "translate"):
            raise ValueError(f"task={task!r}: Whisper's tasks are 'transcribe' and 'translate'")
        ids = [self.sot]
        if self.is_multilingual:
            if language is not None:
                ids.append(self._language_id(language))
            ids.append(self.ids[f"<|{task}|>"])
        elif language not in (None, "en") or task != "transcribe":
            raise ValueError(f"language={language!r}, task={task!r}: an English-only model (vocabulary "
                             f"{self.vocab_size}) only transcribes English; use language=None or 'en' and "
                             "task='transcribe', or a multilingual model")
        if not timestamps:
            ids.append(self.no_timestamps)
        return ids

    def _language_id(self, language: str) -> int:
        if language not in self.languages:
            raise ValueError(f"language {language!r} is not in this vocabulary{did_you_mean(language, self.languages)}; "
                             f"codes: {', '.join(sorted(self.languages))}")
        return self.languages[language]

    # ---- text ---------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """The BPE ids of ``text``, no prompt; control tokens written in it become their id."""
        return self.bpe.encode(text)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of ``ids``.

        With ``skip_special``, control and timestamp tokens are dropped, and so is a previous-text
        prompt (everything before ``<|startoftranscript|>`` when ``<|startofprev|>`` opens it).
        Without, control tokens appear as written and timestamps as ``<|1.08|>``.
        """
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        for i in ids:
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside this Whisper vocabulary (0..{self.vocab_size - 1})")
        if skip_special:
            if ids and ids[0] == self.ids["<|startofprev|>"] and self.sot in ids:
                ids = ids[ids.index(self.sot):]
            return self.bpe.decode([i for i in ids if i < self.timestamp_begin], skip_special_tokens=True)
        parts = [self.bpe.token_bytes(i) if i < self.timestamp_begin
                 else self.timestamp_token(i - self.timestamp_begin).encode() for i in ids]
        return b"".join(parts).decode("utf-8", errors="replace")

    # ---- what the decoder may not say ---------------------------------------------------------

    def non_speech_tokens(self) -> list[int]:
        """Ids of symbols that are not speech (see the module docstring), sorted."""
        found = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in [*_SYMBOLS, *_MUSIC]:
            for ids in (self.encode(symbol), self.encode(" " + symbol)):
                if len(ids) == 1 or symbol in _MUSIC:
                    found.add(ids[0])
        return sorted(found)

    def suppress_tokens(self) -> list[int]:
        """Never emitted: non-speech symbols, and every control token but ``<|endoftext|>`` and
        ``<|notimestamps|>`` (those end the text or belong to the prompt)."""
        control = [self.ids[t] for t in ("<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                                         "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>")]
        return sorted({*self.non_speech_tokens(), *control})

    def begin_suppress_tokens(self) -> list[int]:
        """Also suppressed at the first step: a lone space and ``<|endoftext|>``."""
        return [self.encode(" ")[0], self.eot]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        kind = "multilingual" if self.is_multilingual else "English-only"
        return f"WhisperTokenizer({kind}, vocab_size={self.vocab_size}, timestamps from {self.timestamp_begin})"

