"""Bad input is reported where it is: the file, and the line when there is one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glassformer.cli import main
from glassformer.tokenizers import ByteLevelBPE, WordPiece, load_tokenizer
from glassformer.tokenizers.files import VocabFileError, read_corpus


@pytest.fixture
def gpt2_files(tmp_path: Path) -> tuple[Path, Path]:
    vocab = {c: i for i, c in enumerate(["a", "b", "c", "ab", "abc", "Ġ"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\nab c\n", encoding="utf-8")
    return tmp_path / "vocab.json", tmp_path / "merges.txt"


def test_missing_files_are_named(tmp_path: Path, gpt2_files: tuple[Path, Path]) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        ByteLevelBPE.from_files(tmp_path / "nope.json", gpt2_files[1])
    with pytest.raises(FileNotFoundError, match="vocab.txt: no such file"):
        WordPiece.from_vocab_file(tmp_path / "vocab.txt")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "vocab.json").write_text("{}", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="needs merges.txt beside it"):
        load_tokenizer(tmp_path / "lonely" / "vocab.json")


def test_malformed_merges_name_file_and_line(gpt2_files: tuple[Path, Path]) -> None:
    vocab, merges = gpt2_files
    assert ByteLevelBPE.from_files(vocab, merges).encode("abc") == [4]
    merges.write_text("#version: 0.2\na b\nab  c\n", encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"merges.txt, line 3: expected two tokens"):
        ByteLevelBPE.from_files(vocab, merges)
    merges.write_text("#version: 0.2\na b\nab x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt, line 3: token 'x' of merge 'ab' 'x' is not in the vocabulary"):
        ByteLevelBPE.from_files(vocab, merges)
    merges.write_text("b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 1: the merged token 'bc'"):
        ByteLevelBPE.from_files(vocab, merges)


def test_malformed_vocab_json_names_file_and_line(gpt2_files: tuple[Path, Path]) -> None:
    vocab, merges = gpt2_files
    vocab.write_text('{\n  "a": 0,\n  "b": 1,\n  "c" 2\n}', encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"vocab.json, line 4: malformed JSON"):
        ByteLevelBPE.from_files(vocab, merges)
    vocab.write_text('{"a": 0, "b": "one"}', encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"vocab.json: token 'b' has id 'one'"):
        ByteLevelBPE.from_files(vocab, merges)


def test_non_utf8_bytes_name_file_line_and_column(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n[UNK]\nhello\nw\xf6rld\n")
    with pytest.raises(VocabFileError, match=r"vocab.txt, line 4: not valid UTF-8 \(byte 0xf6 at column 2\)"):
        WordPiece.from_vocab_file(vocab)
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"fine\nstill fine\n\xff\xfe broken\n")
    with pytest.raises(VocabFileError, match=r"corpus.txt, line 3: not valid UTF-8"):
        list(read_corpus([text]))


def test_bad_vocab_txt_and_tiktoken_lines(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[UNK]\n\nhello\n", encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"vocab.txt, line 2: empty token"):
        WordPiece.from_vocab_file(vocab)
    vocab.write_text("hello\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown token '\[UNK\]' is not in the vocabulary"):
        WordPiece.from_vocab_file(vocab)
    ranks = tmp_path / "bad.tiktoken"
    ranks.write_text("YQ== 0\nYg== 1\n!!notbase64 2\n", encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"bad.tiktoken, line 3: '!!notbase64' is not valid base64"):
        load_tokenizer(ranks)
    ranks.write_text("YQ== 0\nYg== 0\n", encoding="utf-8")
    with pytest.raises(VocabFileError, match=r"line 2: rank 0 already used on line 1"):
        load_tokenizer(ranks)
    ranks.write_text("YQ== 0\nYWJj 1\n", encoding="utf-8")  # "abc" cannot be built from lower ranks
    with pytest.raises(ValueError, match=r"token b'abc' \(rank 1\) is not the merge of two lower-ranked tokens"):
        load_tokenizer(ranks)


def test_bad_tokenizer_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": {"type": "Unigram", "vocab": []}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"tokenizer.json: model type 'Unigram' is not supported"):
        load_tokenizer(path)
    path.write_text('{"version": "1.0"}', encoding="utf-8")
    with pytest.raises(VocabFileError, match="not a tokenizer.json"):
        load_tokenizer(path)


def test_cli_reports_a_bad_training_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xc3\x28\n")
    code = main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", str(bad), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "bad.txt, line 2: not valid UTF-8" in capsys.readouterr().err
