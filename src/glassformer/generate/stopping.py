"""Per-row bookkeeping while decoding: the tokens so far, their text, and when a row must stop.

A row stops at ``max_new_tokens``, after a stop token, or once its text contains a stop string.
Text is only decoded when it is needed (a tokenizer was given): to look for stop strings and to
stream text pieces.

Streaming text needs care at two edges. A byte-level tokenizer can end a step in the middle of a
UTF-8 character, which decodes to U+FFFD; and the end of the text may be the start of a stop
string that the next token completes. In both cases the tail is held back until it is settled,
so what was printed never has to be taken back.
"""

from __future__ import annotations

from typing import Protocol

from glassformer.generate.config import GenerationConfig

REPLACEMENT_CHAR = "\ufffd"


class Tokenizer(Protocol):
    """What decoding needs from a tokenizer."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class RowTracker:
    """Tokens, text and stop state of each row of a batch."""

    def __init__(self, batch_size: int, config: GenerationConfig, tokenizer: Tokenizer | None) -> None:
        if config.stop_strings and tokenizer is None:
            raise ValueError(
                f"stop_strings={list(config.stop_strings)} need a tokenizer to turn tokens into text; "
                "pass tokenizer= to generate()"
            )
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(config.stop_token_ids)
        self.stop_strings = config.stop_strings
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.done = [False] * batch_size
        self.reasons = ["length"] * batch_size
        self.texts = [""] * batch_size
        self._final_len: list[int | None] = [None] * batch_size  # text length once a stop string cut it
        self._emitted = [0] * batch_size

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def add(self, step_tokens: list[int]) -> list[int]:
        """Record one step (one token per row; finished rows are skipped). Returns rows that just stopped."""
        stopped = []
        for row, tok in enumerate(step_tokens):
            if self.done[row]:
                continue
            self.tokens[row].append(tok)
            if tok in self.stop_ids:
                # the stop token ends the row but is no part of its text (<|im_end|> is not shown)
                self._stop(row, "stop_token")
                stopped.append(row)
                continue
            if self.tokenizer is not None:
                self.texts[row] = self.tokenizer.decode(self.tokens[row])
            if self.stop_strings:
                cut = _first_stop(self.texts[row], self.stop_strings)
                if cut is not None:
                    self._final_len[row] = cut
                    self._stop(row, "stop_string")
            if self.done[row]:
                stopped.append(row)
        return stopped

    def _stop(self, row: int, reason: str) -> None:
        self.done[row] = True
        self.reasons[row] = reason

    def final_text(self, row: int) -> str:
        """The row's generated text, cut before a stop string if one ended it."""
        end = self._final_len[row]
        return self.texts[row] if end is None else self.texts[row][:end]

    def new_text(self, row: int, final: bool = False) -> str:
        """Text of ``row`` not handed out yet; the unsettled tail is held back unless ``final``."""
        if self.tokenizer is None:
            return ""
        text = self.final_text(row)
        end = len(text)
        if not (final or self.done[row]):
            end = _settled_end(text, self.stop_strings)
        start = self._emitted[row]
        if end <= start:
            return ""
        self._emitted[row] = end
        return text[start:end]


def _first_stop(text: str, stop_strings: tuple[str, ...]) -> int | None:
    """Index where the earliest stop string starts in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stop_strings) if i >= 0]
    return min(hits) if hits else None


def _settled_end(text: str, stop_strings: tuple[str, ...]) -> int:
    """How much of ``text`` can be shown: not a trailing partial character, not a possible stop-string start."""
    end = len(text)
    while end > 0 and text[end - 1] == REPLACEMENT_CHAR:
        end -= 1
    hold = 0  # the longest suffix of text[:end] that is a proper prefix of some stop string
    for stop in stop_strings:
        for n in range(min(len(stop) - 1, end), hold, -1):
            if text[end - n : end] == stop[:n]:
                hold = n
                break
    return end - hold
