"""Token files: nanoGPT's layout and ids, random windows, the `glassformer data prepare` verb."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glassformer.cli import main
from glassformer.data import TokenData, embedded_corpus, prepare, token_dtype, write_tokens
from glassformer.utils.paths import data_file

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20


def test_char_prepare_matches_nanogpt_layout(tmp_path) -> None:
    """Sorted characters as ids, 90/10 split by characters, raw uint16 files (nanoGPT's prepare.py)."""
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    data = prepare(src, "char", tmp_path / "out", progress=False)
    chars = sorted(set(TEXT))
    cut = int(len(TEXT) * 0.9)
    expected_train = np.array([chars.index(c) for c in TEXT[:cut]], dtype=np.uint16)
    assert np.array_equal(np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16), expected_train)
    assert len(np.fromfile(tmp_path / "out" / "val.bin", dtype=np.uint16)) == len(TEXT) - cut
    assert data.vocab_size == len(chars) and data.meta["dtype"] == "uint16"
    assert data.tokenizer().decode(expected_train[:30].tolist()) == TEXT[:30]


def test_windows_are_shifted_by_one_and_reproducible(tmp_path) -> None:
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    data = prepare(src, "char", tmp_path / "out", progress=False)
    a = data.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    b = data.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert a["input_ids"].shape == (4, 16) and a["input_ids"].dtype == torch.long
    assert torch.equal(a["input_ids"][:, 1:], a["targets"][:, :-1])
    # every window is a real stretch of the file
    tokens = torch.from_numpy(np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16).astype(np.int64))
    for row in a["input_ids"]:
        starts = [i for i in range(len(tokens) - 16) if torch.equal(tokens[i : i + 16], row)]
        assert starts
    fn = data.batch_fn(2, 8)
    assert fn("eval", 0, torch.Generator().manual_seed(0))["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError, match="too few"):
        data.get_batch("val", 1, 10_000)


def test_bpe_prepare_round_trips_and_uint32(tmp_path) -> None:
    data = prepare("embedded", "bpe", tmp_path / "bpe", vocab_size=300, progress=False)
    tok = data.tokenizer()
    ids = np.fromfile(tmp_path / "bpe" / "val.bin", dtype=np.uint16)
    corpus = embedded_corpus()
    assert tok.decode(ids.tolist()) == corpus[int(len(corpus) * 0.9) :]
    assert len(ids) < len(corpus) * 0.1  # merges shorten the text
    assert token_dtype(70_000) == np.uint32
    write_tokens(tmp_path / "big.bin", [0, 69_999], 70_000)
    assert np.fromfile(tmp_path / "big.bin", dtype=np.uint32).tolist() == [0, 69_999]


def test_damaged_folder_and_bad_input_are_refused(tmp_path) -> None:
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    prepare(src, "char", tmp_path / "out", progress=False)
    with open(tmp_path / "out" / "train.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match="damaged or half written"):
        TokenData(tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="meta.json"):
        TokenData(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        prepare(src, "wordpiece", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="text file not found"):
        prepare(tmp_path / "nope.txt", "char", tmp_path / "x")
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 5\)"):
        write_tokens(tmp_path / "bad.bin", [1, 5], 5)


def test_cli_prepare(tmp_path, capsys) -> None:
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    assert main(["data", "prepare", str(src), "--tokenizer", "char", "--out", str(tmp_path / "cli")]) == 0
    assert f"vocab {len(set(TEXT))}," in capsys.readouterr().out
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert meta["train_tokens"] + meta["val_tokens"] == len(TEXT)
    assert main(["data", "prepare", str(tmp_path / "none.txt"), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.skipif(data_file("tinyshakespeare", "input.txt") is None, reason="Tiny Shakespeare not in shared data")
def test_tiny_shakespeare_is_the_default_and_matches_nanogpt_counts(tmp_path) -> None:
    data = prepare(None, "char", tmp_path / "shk", progress=False)
    # nanoGPT's data/shakespeare_char/prepare.py prints these numbers
    assert (data.vocab_size, data.meta["train_tokens"], data.meta["val_tokens"]) == (65, 1_003_854, 111_540)
    assert np.fromfile(tmp_path / "shk" / "train.bin", dtype=np.uint16)[:5].tolist() == [18, 47, 56, 57, 58]
