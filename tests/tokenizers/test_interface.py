"""The shared interface: batches (padding, truncation, masks, tensors), saving, format detection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from tok_texts import TORTURE

from glassformer.tokenizers import ByteLevelBPE, CharTokenizer, WordPiece, load_tokenizer, train_bpe

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def bert_pair(minilm_folder: Path):
    return WordPiece.from_folder(minilm_folder), transformers.BertTokenizerFast.from_pretrained(str(minilm_folder))


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("padding, truncation, max_length", [(True, False, None), ("max_length", True, 12),
                                                             (True, True, 7), ("max_length", True, 40)])
def test_batches_like_bert_tokenizer_fast(bert_pair, sst2_sentences: list[str], padding_side: str,
                                          padding, truncation: bool, max_length: int | None) -> None:
    ours, reference = bert_pair
    reference.padding_side = padding_side
    texts, pairs = sst2_sentences[:24], sst2_sentences[24:48]
    for second in (None, pairs):
        got = ours.encode_batch(texts, second, add_special_tokens=True, padding=padding, truncation=truncation,
                                max_length=max_length, padding_side=padding_side, return_tensors="pt")
        want = reference(texts, second, padding=padding, truncation=truncation, max_length=max_length,
                         return_tensors="pt")
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), (key, second is not None)
            assert got[key].dtype == torch.long


def test_batch_lists_masks_and_errors(gpt2_ours: ByteLevelBPE) -> None:
    batch = gpt2_ours.encode_batch(["Hello world", "Hi", ""], padding=True, padding_side="left", pad_id=0)
    assert batch.input_ids[1][:1] == [0] and batch["attention_mask"] == [[1, 1], [0, 1], [0, 0]]
    assert "token_type_ids" not in batch  # a decoder takes no segment ids
    plain = gpt2_ours.encode_batch(["Hello world", "Hi"])
    assert plain["input_ids"] == [gpt2_ours.encode("Hello world"), gpt2_ours.encode("Hi")]
    cut = gpt2_ours.encode_batch([TORTURE], truncation=True, max_length=5)
    assert cut["input_ids"] == [gpt2_ours.encode(TORTURE)[:5]]
    with pytest.raises(ValueError, match="no pad token"):
        gpt2_ours.encode_batch(["a", "bb"], padding=True)
    with pytest.raises(ValueError, match="different lengths"):
        gpt2_ours.encode_batch(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="need max_length"):
        gpt2_ours.encode_batch(["a"], truncation=True)
    with pytest.raises(TypeError, match="list of texts"):
        gpt2_ours.encode_batch("a single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text string"):
        gpt2_ours.encode(b"bytes")  # type: ignore[arg-type]
    ids = torch.tensor(gpt2_ours.encode("tensor in"))
    assert gpt2_ours.decode(ids) == "tensor in" and gpt2_ours.decode_batch(ids[None]) == ["tensor in"]


def test_save_and_load_every_kind(tmp_path: Path, corpus: str, minilm_folder: Path) -> None:
    kinds = [
        train_bpe([corpus[:30_000]], 400, pattern="cl100k", show_progress=False),
        WordPiece.from_folder(minilm_folder),
        CharTokenizer.from_text(corpus[:5000]),
    ]
    text = corpus[:2000]
    for tok in kinds:
        folder = tok.save(tmp_path / tok.kind)
        again = load_tokenizer(folder, type(tok))
        assert type(again) is type(tok) and again.vocab == tok.vocab and again.roles == tok.roles
        assert again.encode(text, add_special_tokens=True) == tok.encode(text, add_special_tokens=True)
    with pytest.raises(ValueError, match="holds a WordPiece"):
        load_tokenizer(tmp_path / "wordpiece", ByteLevelBPE)


def test_load_tokenizer_recognizes_each_format(tmp_path: Path, gpt2_tiktoken: Path, minilm_folder: Path,
                                               corpus: str) -> None:
    bpe = train_bpe([corpus[:30_000]], 400, show_progress=False)
    bpe.save(tmp_path / "saved")
    gpt2_files = tmp_path / "gpt2_files"
    gpt2_files.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tmp_path / "saved" / name, gpt2_files / name)
    bert_files = tmp_path / "bert_files"
    bert_files.mkdir()
    shutil.copy(minilm_folder / "vocab.txt", bert_files / "vocab.txt")
    (bert_files / "tokenizer_config.json").write_text('{"do_lower_case": false}', encoding="utf-8")
    rank_folder = tmp_path / "ranks"
    rank_folder.mkdir()
    shutil.copy(gpt2_tiktoken, rank_folder / "gpt2.tiktoken")

    text = "Hello World, it's 2024! <|endoftext|>"
    assert load_tokenizer(tmp_path / "saved").encode(text) == bpe.encode(text)
    assert load_tokenizer(tmp_path / "saved" / "tokenizer.json").encode(text) == bpe.encode(text)
    assert load_tokenizer(gpt2_files).encode(text) == bpe.encode(text)
    assert load_tokenizer(gpt2_files / "vocab.json").encode(text) == bpe.encode(text)
    cased = load_tokenizer(bert_files)
    assert isinstance(cased, WordPiece) and not cased.lowercase
    assert load_tokenizer(bert_files / "vocab.txt").encode(text) == cased.encode(text)
    assert load_tokenizer(rank_folder).encode(text)[-1] == 50256
    assert load_tokenizer(gpt2_tiktoken).encode("Hello") == [15496]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer found"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokenizer(tmp_path / "missing")
