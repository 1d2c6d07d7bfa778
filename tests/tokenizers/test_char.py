"""Character tokenizer: nanoGPT's shakespeare_char vocabulary, exact round trips, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from glassformer.tokenizers import CharTokenizer, load_tokenizer
from glassformer.utils.paths import data_file


@pytest.fixture(scope="module")
def shakespeare(corpus: str) -> str:
    path = data_file("tinyshakespeare", "input.txt")
    return path.read_text(encoding="utf-8") if path is not None else corpus[:200_000]


def test_vocabulary_is_nanogpts(shakespeare: str) -> None:
    tok = CharTokenizer.from_text(shakespeare)
    chars = sorted(set(shakespeare))  # nanoGPT's prepare.py
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert tok.vocab_size == len(chars)
    if data_file("tinyshakespeare", "input.txt") is not None:
        assert tok.vocab_size == 65 and tok.chars[:2] == ["\n", " "]
    sample = shakespeare[:5000]
    ids = tok.encode(sample)
    assert ids == [stoi[c] for c in sample]
    assert tok.decode(ids) == sample


def test_unknown_character_is_named() -> None:
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(ValueError, match=r"'Z' \(U\+005A\) at position 3"):
        tok.encode("helZo")
    with pytest.raises(ValueError, match="not in the vocabulary|failed"):
        tok.with_backend("fast").encode("helZo")
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer.from_text("")


def test_special_tokens_save_load_and_fast_path(shakespeare: str, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tok = CharTokenizer.from_text(shakespeare, special_tokens=["<eos>", "<pad>"], roles={"eos": "<eos>", "pad": "<pad>"})
    n = len(set(shakespeare))
    assert tok.special_tokens == {"<eos>": n, "<pad>": n + 1} and tok.eos_token_id == n
    text = shakespeare[:3000] + "<eos>" + shakespeare[3000:4000]
    ids = tok.encode(text)
    assert ids[3000] == n and tok.decode(ids) == text
    assert tok.with_backend("fast").encode(text) == ids
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.encode(text) == ids and again.pad_token_id == n + 1
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids == ids
    assert Tokenizer.from_file(str(tmp_path / "tokenizer.json")).decode(ids, skip_special_tokens=False) == text
