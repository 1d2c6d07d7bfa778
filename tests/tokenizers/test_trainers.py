"""Trainers: the incremental bookkeeping learns what a from-scratch recount learns, sizes are as
asked, runs are deterministic, special tokens survive; WordPiece uses the likelihood score."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import regex
from tok_texts import TORTURE

from glassformer.tokenizers import WordPiece, load_tokenizer, train_bpe, train_wordpiece
from glassformer.tokenizers.pretokenize import GPT2_PATTERN, bytes_to_token

hf_tokenizers = pytest.importorskip("tokenizers")


def recount_bpe(text: str, vocab_size: int, min_frequency: int = 2) -> list[tuple[str, str]]:
    """BPE the slow, obvious way: recount every pair of every word before each merge."""
    words = [[list(w.encode("utf-8")), c] for w, c in Counter(regex.findall(GPT2_PATTERN, text)).items()]
    token_bytes = [bytes([b]) for b in range(256)]
    merges = []
    while len(token_bytes) < vocab_size:
        counts: Counter[tuple[int, int]] = Counter()
        for symbols, count in words:
            for pair in zip(symbols, symbols[1:]):
                counts[pair] += count
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        merged = token_bytes[best[0]] + token_bytes[best[1]]
        new = token_bytes.index(merged) if merged in token_bytes else len(token_bytes)
        if new == len(token_bytes):
            token_bytes.append(merged)
        merges.append((bytes_to_token(token_bytes[best[0]]), bytes_to_token(token_bytes[best[1]])))
        for word in words:
            word[0] = _merge(word[0], best, new)
    return merges


def recount_wordpiece(text: str, vocab_size: int, specials: list[str], min_frequency: int = 2) -> list[str]:
    """WordPiece the obvious way, with the reference's own normalizer and word splitter."""
    from tokenizers import normalizers, pre_tokenizers

    norm, pre = normalizers.BertNormalizer(), pre_tokenizers.BertPreTokenizer()
    counts = Counter(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    alphabet = sorted({c for w in counts for c in w})
    tokens = specials + alphabet + ["##" + c for c in alphabet]
    words = [[[tokens.index(w[0])] + [tokens.index("##" + c) for c in w[1:]], n] for w, n in counts.items()]
    while len(tokens) < vocab_size:
        pairs: Counter[tuple[int, int]] = Counter()
        single: Counter[int] = Counter()
        for symbols, n in words:
            for s in symbols:
                single[s] += n
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        candidates = [p for p in pairs if pairs[p] >= min_frequency]
        if not candidates:
            break
        best = min(candidates, key=lambda p: (-pairs[p] / (single[p[0]] * single[p[1]]), tokens[p[0]], tokens[p[1]]))
        piece = tokens[best[0]] + tokens[best[1]][2:]
        if piece not in tokens:
            tokens.append(piece)
        for word in words:
            word[0] = _merge(word[0], best, tokens.index(piece))
    return tokens


def _merge(symbols: list[int], pair: tuple[int, int], new: int) -> list[int]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def test_bpe_learns_what_a_recount_learns(corpus: str) -> None:
    text = corpus[:12_000] + TORTURE
    ours = train_bpe([text], 256 + 150 + 1, show_progress=False)
    assert ours.merges == recount_bpe(text, 256 + 150)


def test_bpe_size_determinism_and_special_tokens(corpus: str) -> None:
    text = (corpus[:100_000] + "<|endoftext|>") * 2 + "<|pad|>"
    first = train_bpe([text], 1000, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False)
    second = train_bpe([text], 1000, special_tokens=["<|endoftext|>", "<|pad|>"], show_progress=False)
    assert len(first.vocab) == first.vocab_size == 1000
    assert first.merges == second.merges and first.vocab == second.vocab
    assert first.special_tokens == {"<|endoftext|>": 998, "<|pad|>": 999}
    assert not any("endoftext" in t for t in first.token_ids)  # special tokens were cut out before counting
    assert first.encode("a<|endoftext|>b<|pad|>")[1] == 998 and first.encode("<|pad|>") == [999]
    assert first.decode(first.encode(TORTURE)) == TORTURE


def test_bpe_rejects_a_vocabulary_smaller_than_the_alphabet() -> None:
    with pytest.raises(ValueError, match="smaller than the base alphabet"):
        train_bpe(["some text"], 256, show_progress=False)


def test_bpe_warns_when_the_corpus_runs_out_of_pairs() -> None:
    with pytest.warns(UserWarning, match="supports only"):
        tok = train_bpe(["abab abab"], 400, show_progress=False)
    assert tok.vocab_size < 400


def test_wordpiece_learns_what_a_recount_learns(corpus: str) -> None:
    text = corpus[:10_000]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    reference = recount_wordpiece(text, 400, specials)
    ours = train_wordpiece([text], 400, show_progress=False)
    assert [ours.id_to_token(i) for i in range(ours.vocab_size)] == reference


def test_wordpiece_scores_by_likelihood_not_frequency() -> None:
    # (a, ##b) is the most frequent pair, but x and y occur only together: WordPiece merges them first.
    text = " ".join(["xy"] * 3 + ["ab"] * 50 + ["ac"] * 50 + ["db"] * 50)
    tok = train_wordpiece([text], 5 + 2 * 6 + 1, show_progress=False)
    assert tok.id_to_token(tok.vocab_size - 1) == "xy"
    bpe = train_bpe([text.replace(" ", "\n")], 256 + 1 + 1, show_progress=False)
    assert bpe.merges[0] == ("a", "b")  # frequency picks differently


def test_wordpiece_size_determinism_specials_and_reference_reload(corpus: str, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    text = corpus[:150_000]
    first = train_wordpiece([text], 2000, show_progress=False)
    second = train_wordpiece([text], 2000, show_progress=False)
    assert len(first.vocab) == first.vocab_size == 2000 and first.vocab == second.vocab
    assert [first.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert first.unk_token_id not in first.encode(text[:20_000])  # every training word is covered
    first.save(tmp_path)
    sample = text[:30_000] + TORTURE
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(sample).ids == \
        first.encode(sample, add_special_tokens=True)
    again = WordPiece.from_vocab_file(tmp_path / "vocab.txt")
    assert again.encode(sample) == first.encode(sample) and load_tokenizer(tmp_path).vocab == first.vocab


def test_wordpiece_rejects_a_vocabulary_smaller_than_the_alphabet() -> None:
    with pytest.raises(ValueError, match="smaller than the base alphabet"):
        train_wordpiece(["abc def"], 10, show_progress=False)
    with pytest.raises(ValueError, match="unknown token"):
        train_wordpiece(["abc def"], 100, special_tokens=["[PAD]"], show_progress=False)


def test_wordpiece_limit_alphabet(corpus: str) -> None:
    tok = train_wordpiece([corpus[:20_000] + " жжж ф"], 300, limit_alphabet=30, show_progress=False)
    assert sum(1 for t in tok.token_ids if len(t) == 1) == 30
    assert tok.encode("ф") == [tok.unk_token_id]
