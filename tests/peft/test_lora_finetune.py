"""`glassformer finetune bert --lora ...` end to end on a tiny synthetic task: the adapter (with its
head) is saved, reloads onto the pretrained encoder with the merged model's outputs, and a bad spec
is a clear command-line error."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from glassformer.cli import main
from glassformer.models.bert import Bert, BertConfig
from glassformer.models.bert.finetune import load_classifier, with_classifier
from glassformer.peft import load_adapter, lora_layers
from glassformer.tokenizers.wordpiece import WordPiece

GOOD, BAD = ["good", "great", "fine", "lovely"], ["bad", "awful", "poor", "dull"]
FILLER = ["the", "film", "was", "plot", "actors", "very", "quite", "story", "and", "a"]


def _tokenizer() -> WordPiece:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER]
    return WordPiece({t: i for i, t in enumerate(tokens)}, lowercase=True)


def _write_rows(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(n):
            label = rng.random() < 0.5
            words = rng.choices(FILLER, k=rng.randint(2, 6))
            words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
            writer.writerow([" ".join(words), "pos" if label else "neg"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    work = tmp_path_factory.mktemp("lora-ft")
    tok = _tokenizer()
    torch.manual_seed(0)
    Bert(BertConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=24,
                    dropout=0.0, attn_dropout=0.0)).save(work / "pretrained")  # fmt: skip
    tok.save(work / "pretrained")
    _write_rows(work / "train.csv", 256, 0)
    _write_rows(work / "val.csv", 64, 1)
    code = main([
        "finetune", "bert", "--from", str(work / "pretrained"), "--train", str(work / "train.csv"),
        "--val-file", str(work / "val.csv"), "--out", str(work / "run"), "--epochs", "6", "--batch-size", "16",
        "--lr", "5e-3", "--max-len", "12", "--lora", "r=4,alpha=16,target=all-linear",
        "--set", "progress=false", "--set", "plot=false",
    ])  # fmt: skip
    assert code == 0
    return work / "pretrained", work / "run", json.loads((work / "run" / "results.json").read_text())


def test_lora_finetune_learns_and_saves_adapter_with_head(run: tuple[Path, Path, dict]) -> None:
    pretrained, out, results = run
    assert results["val"]["accuracy"] >= 0.8, results
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"] and config["r"] == 4
    assert config["base_model_name_or_path"] == str(pretrained)
    merged, tok = load_classifier(out / "model")  # a plain model: the adapter is folded in
    assert not list(lora_layers(merged))
    again = with_classifier(Bert.load(pretrained), ["neg", "pos"])
    load_adapter(again, out / "adapter", base_name=str(pretrained))
    ids = torch.tensor([[2, 5, 15, 3], [2, 10, 16, 3]])
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_bad_lora_spec_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["finetune", "bert", "--from", str(tmp_path), "--train", str(tmp_path / "x.csv"), "--lora", "rank=8"]
    )
    assert code == 2
    assert "unknown key 'rank'" in capsys.readouterr().err
