"""SentencePiece-style BPE from a GGUF vocabulary (``tokenizer.ggml.model == "llama"``): Gemma 3's.

Unlike GPT-2's byte-level BPE, the vocabulary holds Unicode pieces with a score each and no merge
list. Encoding a text:

1. cut out the added tokens first, longest match wins: control tokens (``<start_of_turn>``, ...)
   and the user-defined ones Gemma adds (runs of newlines, ``<start_of_image>``, ...);
2. in the rest, spaces become ``▁`` (Gemma adds no space in front: ``add_space_prefix`` is false);
3. start from single characters and repeatedly merge the adjacent pair whose joined piece is in
   the vocabulary with the highest score (the leftmost on ties), until no pair joins;
4. a character with no piece of its own is spelled as its UTF-8 bytes, ``<0xE2>`` ... (byte fallback).

Decoding reverses it: byte pieces are gathered into bytes, ``▁`` becomes a space.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass

SPACE = "\u2581"  # ▁
CONTROL, USER_DEFINED, BYTE = 3, 4, 6  # llama.cpp token types
BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")


@dataclass
class SentencePieceData:
    """What a GGUF header says about a SentencePiece vocabulary."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool


class SentencePieceBPE:
    """``encode`` / ``decode`` over a scored vocabulary; ``eos_token_id``, ``token_to_id`` for ``generate``."""

    def __init__(self, data: SentencePieceData) -> None:
        self.data = data
        self.vocab = {tok: i for i, tok in enumerate(data.tokens)}
        self.bos_token_id, self.eos_token_id, self.pad_token_id = data.bos_id, data.eos_id, data.pad_id
        added = sorted((t for t, k in zip(data.tokens, data.types, strict=True) if k in (CONTROL, USER_DEFINED)),
                       key=len, reverse=True)  # fmt: skip
        self._added = re.compile("|".join(re.escape(t) for t in added)) if added else None
        self._bytes = {i: int(m.group(1), 16) for i, t in enumerate(data.tokens)
                       if data.types[i] == BYTE and (m := BYTE_PIECE.fullmatch(t))}  # fmt: skip
        self._control = {i for i, k in enumerate(data.types) if k == CONTROL}

    @property
    def vocab_size(self) -> int:
        return len(self.data.tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``, with BOS in front when the vocabulary asks for it (``add_bos``)."""
        ids = [self.data.bos_id] if (self.data.add_bos if add_bos is None else add_bos) and self.data.bos_id is not None else []
        start = 0
        for match in self._added.finditer(text) if self._added else ():
            ids += self._encode_plain(text[start : match.start()])
            ids.append(self.vocab[match.group()])
            start = match.end()
        return ids + self._encode_plain(text[start:])

    def _encode_plain(self, text: str) -> list[int]:
        if not text:
            return []
        pieces = self._merge(list(text.replace(" ", SPACE)))
        ids: list[int] = []
        for piece in pieces:
            if piece in self.vocab:
                ids.append(self.vocab[piece])
            else:
                ids += [self._byte_id(b) for b in piece.encode("utf-8")]
        return ids

    def _byte_id(self, value: int) -> int:
        token = f"<0x{value:02X}>"
        if token in self.vocab:
            return self.vocab[token]
        if self.data.unk_id is None:
            raise ValueError(f"byte {value:#04x} has no piece and the vocabulary has no <unk>")
        return self.data.unk_id

    def _merge(self, symbols: list[str]) -> list[str]:
        """Best-score-first merging over a linked list, with a heap of candidate pairs.

        A heap entry is ``(-score, left index, left text, right text)``; it is stale once either
        side has been merged into something else, which the text check catches.
        """
        n = len(symbols)
        prev, nxt = list(range(-1, n - 1)), [*range(1, n), -1]
        heap: list[tuple[float, int, str, str]] = []

        def push(i: int) -> None:
            j = nxt[i]
            if j != -1 and (idx := self.vocab.get(symbols[i] + symbols[j])) is not None:
                heapq.heappush(heap, (-self.data.scores[idx], i, symbols[i], symbols[j]))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, left, right = heapq.heappop(heap)
            j = nxt[i]
            if j == -1 or symbols[i] != left or symbols[j] != right:
                continue  # stale
            symbols[i], symbols[j] = left + right, ""
            nxt[i] = nxt[j]
            if nxt[j] != -1:
                prev[nxt[j]] = i
            if prev[i] != -1:
                push(prev[i])
            push(i)
        return [s for s in symbols if s]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; byte pieces join into UTF-8 (a cut multi-byte character shows as U+FFFD)."""
        out = bytearray()
        for i in ids:
            if i in self._bytes:
                out.append(self._bytes[i])
            elif not (skip_special_tokens and i in self._control):
                out += self.data.tokens[i].replace(SPACE, " ").encode("utf-8")
        return out.decode("utf-8", errors="replace")
