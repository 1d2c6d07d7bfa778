"""Learning a vocabulary from text: byte-level BPE and true WordPiece.

Both trainers start the same way: cut the text into words (the tokenizer's own pre-tokenizer),
count each distinct word once, and write every word as a list of base symbols (bytes for BPE,
characters for WordPiece). Then, repeatedly, they pick one pair of adjacent symbols, merge it
everywhere into a new symbol, and add that symbol to the vocabulary. They differ in the pick:

- **BPE** merges the most frequent pair (ties: the pair with the smaller ids).
- **WordPiece** merges the pair with the best *likelihood score*
  ``freq(ab) / (freq(a) * freq(b))``: a pair that appears together more often than its parts'
  frequencies predict. ``"##s"`` is everywhere, so ``("dog", "##s")`` scores low even when
  frequent, while two rare pieces that always occur together score high. (The ``tokenizers``
  library's ``WordPieceTrainer`` runs BPE's frequency rule instead; this one does not.)

Recounting every pair after each merge would cost a pass over the corpus per merge. Instead the
counts are kept up to date: a merge only changes the pairs that touch it, in the words that
contain it (an index from pair to words says which), and a heap with lazily discarded stale
entries finds the next best pair.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import regex

from glassformer.tokenizers.bpe import ByteLevelBPE
from glassformer.tokenizers.pretokenize import PreTokenizer, bytes_to_token
from glassformer.tokenizers.wordpiece import BERT_SPECIAL_TOKENS, BertNormalizer, WordPiece, split_words
from glassformer.utils.progress import Progress

Pair = tuple[int, int]


def count_words(
    texts: Iterable[str],
    split: Callable[[str], list[str]],
    special_tokens: Sequence[str] = (),
    show_progress: bool = True,
) -> Counter[str]:
    """How often each word occurs; special tokens are cut out first and never counted."""
    special_re = (regex.compile("|".join(map(regex.escape, sorted(special_tokens, key=len, reverse=True))))
                  if special_tokens else None)
    counts: Counter[str] = Counter()
    with Progress(desc="counting words", unit="char", unit_scale=True, enabled=show_progress) as bar:
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"training texts must be strings, got {type(text).__name__}")
            for part in special_re.split(text) if special_re else (text,):
                counts.update(split(part))
            bar.update(len(text))
    return counts


class _PairIndex:
    """Words as symbol lists, with pair counts (weighted by word frequency) kept up to date."""

    def __init__(self, words: list[list[int]], freqs: list[int]) -> None:
        self.words, self.freqs = words, freqs
        self.counts: defaultdict[Pair, int] = defaultdict(int)
        self.where: defaultdict[Pair, set[int]] = defaultdict(set)  # pair -> words holding it
        for w, (symbols, freq) in enumerate(zip(words, freqs)):
            for pair in zip(symbols, symbols[1:]):
                self.counts[pair] += freq
                self.where[pair].add(w)

    def merge(self, pair: Pair, new: int) -> tuple[dict[Pair, int], int]:
        """Replace ``pair`` by ``new`` in every word, left to right; return the change of every
        other pair's count and how many (weighted) times the pair was merged."""
        a, b = pair
        delta: defaultdict[Pair, int] = defaultdict(int)
        merged = 0
        for w in self.where.pop(pair, ()):
            symbols, freq = self.words[w], self.freqs[w]
            i = 0
            while i < len(symbols) - 1:
                if symbols[i] == a and symbols[i + 1] == b:
                    if i > 0:  # (left, a) becomes (left, new)
                        left = symbols[i - 1]
                        delta[left, a] -= freq
                        delta[left, new] += freq
                        self.where[left, new].add(w)
                    if i + 2 < len(symbols):  # (b, right) becomes (new, right)
                        right = symbols[i + 2]
                        delta[b, right] -= freq
                        delta[new, right] += freq
                        self.where[new, right].add(w)
                    symbols[i : i + 2] = [new]
                    merged += freq
                i += 1
        delta.pop(pair, None)
        self.counts.pop(pair, None)
        for changed, d in delta.items():
            count = self.counts[changed] + d
            if count > 0:
                self.counts[changed] = count
            else:
                del self.counts[changed]
        return delta, merged


def _check_size(vocab_size: int, base: int, what: str) -> None:
    if vocab_size < base:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the base alphabet ({what}: {base})")


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] = ("<|endoftext|>",),
    pattern: str | Sequence[str] = "gpt2",
    min_frequency: int = 2,
    show_progress: bool = True,
) -> ByteLevelBPE:
    """Learn a byte-level BPE with ``vocab_size`` tokens: 256 bytes, merges, then special tokens.

    Token ids: byte ``b`` is id ``b``, the k-th new token is ``256 + k``, special tokens come
    last (as ``<|endoftext|>`` does in GPT-2). Pairs seen fewer than ``min_frequency`` times are
    never merged, so a small corpus can end with fewer tokens (a warning says so).
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    _check_size(vocab_size, 256 + len(special_tokens), f"256 bytes + {len(special_tokens)} special tokens")
    pretokenizer = PreTokenizer.make(pattern)
    counts = count_words(texts, pretokenizer, special_tokens, show_progress)
    index = _PairIndex([list(word.encode("utf-8")) for word in counts], list(counts.values()))

    token_bytes = [bytes([b]) for b in range(256)]
    ids_of: dict[bytes, int] = {t: i for i, t in enumerate(token_bytes)}
    merges: list[tuple[str, str]] = []
    target = vocab_size - len(special_tokens)
    heap = [(-count, pair) for pair, count in index.counts.items()]
    heapq.heapify(heap)
    with Progress(target - 256, desc="learning merges", unit="merge", enabled=show_progress) as bar:
        while len(token_bytes) < target and heap:
            negative, pair = heapq.heappop(heap)
            count = index.counts.get(pair, 0)
            if count != -negative:  # stale: the count went down (or the pair is gone) since
                if 0 < count < -negative:
                    heapq.heappush(heap, (-count, pair))
                continue
            if count < min_frequency:
                break
            merged = token_bytes[pair[0]] + token_bytes[pair[1]]
            new = ids_of.get(merged)
            if new is None:  # two different merges can spell the same bytes; they share one id
                new = ids_of[merged] = len(token_bytes)
                token_bytes.append(merged)
                bar.update(1)
            merges.append((bytes_to_token(token_bytes[pair[0]]), bytes_to_token(token_bytes[pair[1]])))
            delta, _ = index.merge(pair, new)
            for changed, d in delta.items():
                if d > 0:
                    heapq.heappush(heap, (-index.counts[changed], changed))
    if len(token_bytes) < target:
        warnings.warn(f"the corpus supports only {len(token_bytes) + len(special_tokens)} tokens "
                      f"(asked for {vocab_size}); no pair occurs {min_frequency}+ times any more", stacklevel=2)
    vocab = {bytes_to_token(t): i for i, t in enumerate(token_bytes)}
    specials = {token: len(token_bytes) + i for i, token in enumerate(special_tokens)}
    roles = {"bos": special_tokens[0], "eos": special_tokens[0]} if special_tokens else None
    return ByteLevelBPE(vocab, merges, specials, pattern=pretokenizer, roles=roles)


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] = BERT_SPECIAL_TOKENS,
    unk_token: str = "[UNK]",
    lowercase: bool = True,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
    limit_alphabet: int | None = None,
    max_chars_per_word: int = 100,
    continuing_prefix: str = "##",
    show_progress: bool = True,
) -> WordPiece:
    """Learn a WordPiece vocabulary of ``vocab_size`` tokens with the likelihood score.

    Vocabulary: special tokens first (``[PAD]`` = 0 ...), then every character of the alphabet
    both as a word start ``c`` and as a continuation ``##c`` (so any word over the alphabet can
    be covered), then the merged pieces in the order they were learned. ``limit_alphabet`` keeps
    only the most frequent characters (the others become ``[UNK]``); pairs seen fewer than
    ``min_frequency`` times are never merged (without that floor, pairs seen once score highest).
    """
    special_tokens = list(dict.fromkeys(special_tokens))
    if unk_token not in special_tokens:
        raise ValueError(f"the unknown token {unk_token!r} must be one of the special tokens {special_tokens}")
    normalizer = BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    counts = count_words(texts, lambda text: split_words(normalizer(text)), special_tokens, show_progress)
    counts = Counter({w: c for w, c in counts.items() if len(w) <= max_chars_per_word})
    char_counts: Counter[str] = Counter()
    for word, count in counts.items():
        for char in word:
            char_counts[char] += count
    alphabet = sorted(char_counts)
    if limit_alphabet is not None and len(alphabet) > limit_alphabet:
        alphabet = sorted(c for c, _ in char_counts.most_common(limit_alphabet))
    tokens = list(special_tokens) + alphabet + [continuing_prefix + c for c in alphabet]
    _check_size(vocab_size, len(tokens), f"{len(special_tokens)} special tokens + 2 x {len(alphabet)} characters")
    ids_of = {t: i for i, t in enumerate(tokens)}

    words: list[list[int]] = []
    freqs: list[int] = []
    for word, count in counts.items():
        if all(c in ids_of for c in word):  # words with a character cut by limit_alphabet are [UNK]
            words.append([ids_of[word[0]]] + [ids_of[continuing_prefix + c] for c in word[1:]])
            freqs.append(count)
    index = _PairIndex(words, freqs)
    token_freq: defaultdict[int, int] = defaultdict(int)
    pairs_of: defaultdict[int, set[Pair]] = defaultdict(set)  # symbol -> pairs it is part of
    for symbols, freq in zip(words, freqs):
        for s in symbols:
            token_freq[s] += freq
    for pair in index.counts:
        pairs_of[pair[0]].add(pair)
        pairs_of[pair[1]].add(pair)

    def score(pair: Pair) -> float:
        return index.counts[pair] / (token_freq[pair[0]] * token_freq[pair[1]])

    def entry(pair: Pair) -> tuple[float, str, str, Pair]:
        return (-score(pair), tokens[pair[0]], tokens[pair[1]], pair)  # ties: by the pieces' text

    heap = [entry(p) for p, c in index.counts.items() if c >= min_frequency]
    heapq.heapify(heap)
    with Progress(vocab_size - len(tokens), desc="learning pieces", unit="piece", enabled=show_progress) as bar:
        while len(tokens) < vocab_size and heap:
            negative, _, _, pair = heapq.heappop(heap)
            # Every change to a pair's score pushes a fresh entry, so an entry whose score is
            # not the current one is stale and simply dropped.
            if index.counts.get(pair, 0) < min_frequency or score(pair) != -negative:
                continue
            a, b = pair
            text = tokens[a] + tokens[b][len(continuing_prefix):]
            new = ids_of.get(text)
            if new is None:
                new = ids_of[text] = len(tokens)
                tokens.append(text)
                bar.update(1)
            delta, merged = index.merge(pair, new)
            token_freq[a] -= merged
            token_freq[b] -= merged
            token_freq[new] += merged
            dirty = set(delta)
            for symbol in (a, b):  # their frequency fell, so every pair holding them scores higher
                live = {p for p in pairs_of[symbol] if p in index.counts}
                pairs_of[symbol] = live
                dirty |= live
            for p in delta:
                pairs_of[p[0]].add(p)
                pairs_of[p[1]].add(p)
            for p in dirty:
                if index.counts.get(p, 0) >= min_frequency:
                    heapq.heappush(heap, entry(p))
    if len(tokens) < vocab_size:
        warnings.warn(f"the corpus supports only {len(tokens)} tokens (asked for {vocab_size}); "
                      f"no pair occurs {min_frequency}+ times any more", stacklevel=2)
    return WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=unk_token, continuing_prefix=continuing_prefix,
                     max_chars_per_word=max_chars_per_word, lowercase=lowercase, strip_accents=strip_accents,
                     special_tokens={t: ids_of[t] for t in special_tokens})
