"""Byte-level BPE, the tokenizer of GPT-2 and most decoders since: exact ids, any UTF-8 text.

How a text becomes ids:

1. special tokens (``<|endoftext|>``) are cut out first and become their single id;
2. a regex cuts the rest into pieces (``"Hello world!"`` -> ``"Hello"``, ``" world"``, ``"!"``);
3. each piece is turned into its UTF-8 bytes, one token per byte to start with;
4. adjacent tokens are merged, always the pair whose merge was learned earliest (lowest rank)
   first, until no learned merge applies. Whatever is left are the ids.

Every byte has a token, so nothing is ever unknown, and decoding is just concatenating each
token's bytes: ``decode(encode(s)) == s`` for any string. Vocabulary files spell a token's bytes
with GPT-2's byte-to-unicode table (``Ġ`` is the space byte); see ``pretokenize.bytes_to_unicode``.

Ways to build one:

- ``ByteLevelBPE.from_vocab_merges(vocab, merges, special_tokens, pattern="gpt2")``: from a
  ``{token: id}`` dict and the merges in rank order (pairs of tokens, or ``"a b"`` strings), both
  in byte-to-unicode spelling -- exactly what a GGUF file (``tokenizer.ggml.tokens`` as the
  vocabulary with ids = positions, ``tokenizer.ggml.merges``, control tokens as special tokens) or
  a Hugging Face ``tokenizer.json`` holds. ``pattern`` is ``"gpt2"``, ``"cl100k"`` (GPT-4, Llama 3),
  ``"smollm"`` (digits one by one, then GPT-2's regex), one custom regex or a list of them.
- ``ByteLevelBPE.from_files("vocab.json", "merges.txt")``: GPT-2's files.
- ``ByteLevelBPE.from_tiktoken("gpt2.tiktoken")``: tiktoken's rank file; the merges are recovered
  from the ranks (each token is the merge of the two pieces BPE splits it into).
- ``glassformer.tokenizers.load_tokenizer(path)``: any of these, or a ``tokenizer.json`` (GPT-2,
  Llama 3, SmolLM2, Qwen: ByteLevel / Split / Digits pre-tokenizers).
- ``glassformer.tokenizers.train_bpe(texts, vocab_size)``: learn one.

Speed: pieces repeat (``" the"``), so each piece's ids are cached; the merge loop itself works on
small lists with C-level helpers, and switches to a heap for long pieces so that a 100 kB run of
digits is not quadratic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from glassformer.tokenizers import files
from glassformer.tokenizers.base import (
    PathLike,
    Template,
    Tokenizer,
    TokenizerBackend,
    max_length_from_config,
    roles_from_config,
    special_tokens_from_json,
)
from glassformer.tokenizers.pretokenize import (
    PreTokenizer,
    bytes_to_token,
    bytes_to_unicode,
    normalize,
    normalizer_from_json,
    pretokenizer_from_json,
    pretokenizer_to_json,
    token_to_bytes,
)

_NO_MERGE = (float("inf"), -1)


class _PieceCache(dict):
    """Piece -> ids; computes on a miss, and starts over when full so memory stays bounded."""

    def __init__(self, compute: Callable[[str], list[int]], limit: int) -> None:
        super().__init__()
        self.compute, self.limit = compute, limit

    def __missing__(self, piece: str) -> list[int]:
        ids = self.compute(piece)
        if len(self) >= self.limit:
            self.clear()
        self[piece] = ids
        return ids


class ByteLevelBPE(Tokenizer):
    """GPT-2-style byte-level BPE: ``vocab`` and ``merges`` in byte-to-unicode spelling."""

    kind = "bpe"
    heap_min_length = 64  # pieces at least this many bytes long are merged with a heap
    cache_limit = 200_000

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: dict[str, int] | None = None,
        *,
        pattern: str | Sequence[str] | PreTokenizer = "gpt2",
        add_prefix_space: bool = False,
        normalization: str | None = None,
        ignore_merges: bool = False,
        template: Template | None = None,
        roles: dict[str, str] | None = None,
        model_max_length: int | None = None,
        backend: TokenizerBackend = "pure",
        _locate: Callable[[int], str] | None = None,
    ) -> None:
        super().__init__(special_tokens=special_tokens, template=template, roles=roles,
                         model_max_length=model_max_length, backend=backend)
        self.pretokenizer = PreTokenizer.make(pattern, add_prefix_space)
        self.normalization = normalization
        self.ignore_merges = ignore_merges
        self.token_ids: dict[str, int] = files.check_vocab(dict(vocab), "vocab")
        self.merges: list[tuple[str, str]] = [tuple(m) for m in merges]  # type: ignore[misc]
        locate = _locate or (lambda i: f"merge {i}")

        # id -> token and id -> bytes, for decoding. Special tokens decode to their own text.
        self._vocab_all = {**self.token_ids, **self.special_tokens}
        size = max(self._vocab_all.values(), default=-1) + 1
        self._id_token: list[str | None] = [None] * size
        self._id_bytes: list[bytes] = [b""] * size
        for token, index in self.token_ids.items():
            self._id_token[index] = token
            raw = token_to_bytes(token)
            self._id_bytes[index] = raw if raw is not None else token.encode("utf-8")
        for token, index in self.special_tokens.items():
            self._id_token[index] = token
            self._id_bytes[index] = token.encode("utf-8")

        # (left id, right id) -> (rank, merged id): the whole BPE model.
        self._merge_table: dict[tuple[int, int], tuple[int, int]] = {}
        ids = self.token_ids
        for rank, pair in enumerate(self.merges):
            if len(pair) != 2:
                raise ValueError(f"{locate(rank)}: a merge is two tokens, got {pair!r}")
            a, b = pair
            for part in (a, b, a + b):
                if part not in ids:
                    what = "the merged token" if part == a + b else "token"
                    raise ValueError(f"{locate(rank)}: {what} {part!r} of merge {a!r} {b!r} is not in the vocabulary")
            self._merge_table.setdefault((ids[a], ids[b]), (rank, ids[a + b]))
        table = bytes_to_unicode()
        self._byte_ids: list[int | None] = [ids.get(table[byte]) for byte in range(256)]
        self._cache = _PieceCache(self._bpe, self.cache_limit)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_vocab_merges(
        cls,
        vocab: dict[str, int],
        merges: Iterable[tuple[str, str] | str],
        special_tokens: dict[str, int] | None = None,
        pattern: str | Sequence[str] = "gpt2",
        **options: Any,
    ) -> ByteLevelBPE:
        """From a vocabulary and merges in rank order, as a GGUF file or ``tokenizer.json`` holds them.

        ``merges`` entries are ``(a, b)`` pairs or ``"a b"`` strings. ``options`` are the
        constructor's (``add_prefix_space``, ``roles={"eos": "<|im_end|>"}``, ``template``, ...).
        """
        pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
        return cls(vocab, pairs, special_tokens, pattern=pattern, **options)  # type: ignore[arg-type]

    @classmethod
    def from_files(
        cls,
        vocab_json: PathLike,
        merges_txt: PathLike,
        special_tokens: dict[str, int] | None = None,
        pattern: str | Sequence[str] = "gpt2",
        **options: Any,
    ) -> ByteLevelBPE:
        """GPT-2's ``vocab.json`` + ``merges.txt``.

        Without ``special_tokens``, vocabulary entries written like ``<|endoftext|>`` are taken as
        special tokens (GPT-2 keeps its one special token in ``vocab.json``).
        """
        vocab = files.read_vocab_json(vocab_json)
        merges, lines = files.read_merges_txt(merges_txt)
        if special_tokens is None:
            special_tokens = {t: i for t, i in vocab.items() if t.startswith("<|") and t.endswith("|>")}
        return cls(vocab, merges, special_tokens, pattern=pattern,
                   _locate=lambda i: f"{merges_txt}, line {lines[i]}", **options)

    @classmethod
    def from_tiktoken(
        cls,
        source: PathLike | dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        pattern: str | Sequence[str] = "gpt2",
        **options: Any,
    ) -> ByteLevelBPE:
        """A tiktoken rank file (``base64 rank`` per line), or the ``{bytes: rank}`` dict itself.

        The file holds no special tokens; by default ``<|endoftext|>`` gets the id after the
        last rank (50256 for GPT-2), as in GPT-2 and tiktoken's ``gpt2`` encoding.
        """
        ranks = files.read_tiktoken(source) if not isinstance(source, dict) else source
        vocab = {bytes_to_token(token): rank for token, rank in ranks.items()}
        if special_tokens is None:
            special_tokens = {"<|endoftext|>": max(ranks.values()) + 1}
        options.setdefault("roles", {"eos": "<|endoftext|>", "bos": "<|endoftext|>"}
                           if "<|endoftext|>" in special_tokens else None)
        return cls(vocab, merges_from_ranks(ranks, str(source) if not isinstance(source, dict) else "ranks"),
                   special_tokens, pattern=pattern, **options)

    # ---- encoding -----------------------------------------------------------------------------

    def _encode_ordinary(self, text: str) -> list[int]:
        if self.normalization:
            text = normalize(text, self.normalization)
        return list(chain.from_iterable(map(self._cache.__getitem__, self.pretokenizer(text))))

    def _bpe(self, piece: str) -> list[int]:
        """The ids of one pre-tokenized piece: its bytes, merged by rank."""
        try:
            data = piece.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"text holds a lone surrogate U+{ord(piece[err.start]):04X}, which is not "
                             "valid Unicode and has no UTF-8 bytes") from None
        if self.ignore_merges:
            whole = self.token_ids.get(bytes_to_token(data))
            if whole is not None:
                return [whole]
        ids = self._symbol_ids(data)
        if None in ids:
            missing = data[ids.index(None)]
            raise ValueError(f"byte 0x{missing:02x} has no token in this vocabulary (a byte-level BPE needs all 256)")
        if len(ids) >= self.heap_min_length:
            return self._merge_with_heap(ids)  # type: ignore[arg-type]
        get = self._merge_table.get
        while len(ids) > 1:
            # rank (and result) of every adjacent pair; the lowest rank wins, leftmost on a tie
            ranked = list(map(get, zip(ids, ids[1:]), [_NO_MERGE] * (len(ids) - 1)))
            best = min(ranked)
            if best is _NO_MERGE:
                break
            i = ranked.index(best)
            ids[i : i + 2] = [best[1]]
        return ids  # type: ignore[return-value]

    def _symbol_ids(self, data: bytes) -> list[int | None]:
        """The ids merging starts from: one per byte (CLIP's BPE marks the last one as a word end)."""
        return list(map(self._byte_ids.__getitem__, data))

    def _merge_with_heap(self, ids: list[int]) -> list[int]:
        """The same merges in O(n log n): a heap of candidate pairs over a linked list of tokens.

        A heap entry (rank, position, left, right) is stale once either token it joins has been
        merged into something else; it is recognized by comparing the tokens now at that spot.
        Ties on rank pop the lowest position first, which is the leftmost-first rule above.
        """
        table = self._merge_table
        n = len(ids)
        tokens: list[int | None] = list(ids)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        heap = [(m[0], i, a, b, m[1]) for i, (a, b) in enumerate(zip(ids, ids[1:])) if (m := table.get((a, b)))]
        heapq.heapify(heap)
        while heap:
            _, i, a, b, merged = heapq.heappop(heap)
            j = nxt[i]
            if tokens[i] != a or j >= n or tokens[j] != b:
                continue
            tokens[i], tokens[j] = merged, None
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
                if m := table.get((merged, tokens[k])):  # type: ignore[arg-type]
                    heapq.heappush(heap, (m[0], i, merged, tokens[k], m[1]))
            p = prv[i]
            if p >= 0 and (m := table.get((tokens[p], merged))):  # type: ignore[arg-type]
                heapq.heappush(heap, (m[0], p, tokens[p], merged, m[1]))
        return [t for t in tokens if t is not None]

    def clear_cache(self) -> None:
        """Forget the cached pieces (for timing a cold start; encoding never needs it)."""
        self._cache.clear()

    # ---- decoding -----------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of ``ids``: what streaming generation needs, since one token may hold
        only part of a UTF-8 character."""
        table = self._id_bytes
        return b"".join([table[i] for i in ids])

    def _decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- vocabulary ---------------------------------------------------------------------------

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab_all

    def id_to_token(self, index: int) -> str | None:
        return self._id_token[index] if 0 <= index < len(self._id_token) else None

    def token_bytes(self, index: int) -> bytes:
        """What token ``index`` stands for, as bytes (``b" the"`` for ``Ġthe``)."""
        return self._id_bytes[index]

    # ---- files --------------------------------------------------------------------------------

    def to_hf_json(self) -> dict[str, Any]:
        return self._hf_json_layout(
            normalizer={"type": self.normalization} if self.normalization else None,
            pre_tokenizer=pretokenizer_to_json(self.pretokenizer),
            decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            model={
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": self.ignore_merges,
                "vocab": dict(sorted(self.token_ids.items(), key=lambda item: item[1])),
                "merges": [list(m) for m in self.merges],
            },
        )

    @classmethod
    def from_hf_json(cls, data: dict[str, Any], source: str = "tokenizer.json",
                     config: dict[str, Any] | None = None) -> ByteLevelBPE:
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise ValueError(f"{source}: model type {model.get('type')!r} is not BPE")
        for option in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(option):
                raise ValueError(f"{source}: BPE option {option}={model[option]!r} is not supported")
        if model.get("byte_fallback"):
            raise ValueError(f"{source}: byte_fallback BPE (SentencePiece style) is not a byte-level BPE")
        vocab = files.check_vocab(model.get("vocab"), f"{source} (model.vocab)")
        raw_merges = model.get("merges")
        if not isinstance(raw_merges, list):
            raise ValueError(f"{source}: model.merges must be a list")
        merges: list[tuple[str, str]] = []
        for i, m in enumerate(raw_merges):
            pair = m.split(" ") if isinstance(m, str) else m
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(p, str) for p in pair):
                raise ValueError(f"{source}: model.merges[{i}] is not two tokens: {m!r}")
            merges.append((pair[0], pair[1]))
        specials = special_tokens_from_json(data, source)
        config = config or {}
        return cls(
            vocab, merges, specials,
            pattern=pretokenizer_from_json(data.get("pre_tokenizer"), source),
            normalization=normalizer_from_json(data.get("normalizer"), source),
            ignore_merges=bool(model.get("ignore_merges", False)),
            template=Template.from_json(data.get("post_processor"), source),
            roles=roles_from_config(config, specials) or _default_roles(specials),
            model_max_length=max_length_from_config(config),
            _locate=lambda i: f"{source}, model.merges[{i}]",
        )

    def _save_extra_files(self, directory: Path) -> None:
        # GPT-2 keeps its special token in vocab.json too; tools that read only these files need it there
        files.write_vocab_json(directory / "vocab.json", {**self.token_ids, **self.special_tokens})
        files.write_merges_txt(directory / "merges.txt", self.merges)


def _default_roles(specials: dict[str, int]) -> dict[str, str]:
    """GPT-2's convention when no config says otherwise: ``<|endoftext|>`` begins and ends texts."""
    return {"bos": "<|endoftext|>", "eos": "<|endoftext|>"} if "<|endoftext|>" in specials else {}


def merges_from_ranks(ranks: dict[bytes, int], source: str = "ranks") -> list[tuple[str, str]]:
    """The merges a tiktoken rank table implies, in rank order.

    tiktoken stores no merges: it merges any adjacent pair whose concatenation has a rank, the
    lowest rank first. Running that same procedure on a token's own bytes, with only the ranks
    below the token's, stops at exactly two pieces: the merge that created the token.
    """
    merges: list[tuple[str, str]] = []
    get = ranks.get
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [token[i : i + 1] for i in range(len(token))]
        while len(parts) > 2:
            ranked = [get(x + y, rank) for x, y in zip(parts, parts[1:])]
            best = min(ranked)
            if best >= rank:
                break
            i = ranked.index(best)
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2 or parts[0] not in ranks or parts[1] not in ranks:
            raise ValueError(f"{source}: token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
        merges.append((bytes_to_token(parts[0]), bytes_to_token(parts[1])))
    return merges
