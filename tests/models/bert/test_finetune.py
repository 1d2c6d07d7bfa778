"""Fine-tuning end to end through the training engine on a tiny synthetic task, the verbs, and the
errors a user meets: empty text, text too long, unseen labels, a checkpoint of another family."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch

from glassformer.cli import main
from glassformer.models.bert import Bert, BertConfig
from glassformer.models.bert.finetune import (
    LabelSet,
    Rows,
    classify,
    load_classifier,
    read_labelled,
    scores,
)
from glassformer.models.bert.text import BertEncoder
from glassformer.tokenizers.wordpiece import WordPiece

GOOD = ["good", "great", "fine", "lovely"]
BAD = ["bad", "awful", "poor", "dull"]
FILLER = ["the", "film", "was", "plot", "actors", "very", "quite", "story", "and", "a"]


def _tokenizer() -> WordPiece:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER, "##s", "##ly", "."]
    return WordPiece({t: i for i, t in enumerate(tokens)}, lowercase=True)


def _rows(n: int, seed: int, source: str) -> Rows:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.random() < 0.5
        words = rng.choices(FILLER, k=rng.randint(2, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        texts.append(" ".join(words))
        labels.append("pos" if label else "neg")
    return Rows(texts, labels, source)


def _tiny(vocab: int) -> Bert:
    torch.manual_seed(0)
    return Bert(BertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=32,
                           dropout=0.0, attn_dropout=0.0))


def _write_csv(path, rows: Rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(rows.texts, rows.labels))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`glassformer finetune bert` on CSV files, from a tiny glassformer model folder with its tokenizer."""
    work = tmp_path_factory.mktemp("ft")
    tok = _tokenizer()
    pretrained = work / "pretrained"
    _tiny(tok.vocab_size).save(pretrained)
    tok.save(pretrained)
    for name, (n, seed) in {"train": (320, 0), "val": (64, 1), "test": (100, 2)}.items():
        _write_csv(work / f"{name}.csv", _rows(n, seed, name))
    out = work / "run"
    code = main([
        "finetune", "bert", "--from", str(pretrained), "--train", str(work / "train.csv"),
        "--val-file", str(work / "val.csv"), "--test", str(work / "test.csv"), "--out", str(out),
        "--epochs", "6", "--batch-size", "16", "--lr", "3e-3", "--max-len", "16", "--set", "progress=false", "--set", "plot=false",
    ])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_tiny_finetune_learns_the_task(trained) -> None:
    out, results = trained
    assert results["test"]["accuracy"] >= 0.9, results
    assert sum(map(sum, results["test"]["confusion"])) == 100
    assert (out / "confusion_test.png").stat().st_size > 1000
    assert results["labels"] == ["neg", "pos"]
    assert (out / "best").is_dir() and (out / "log.jsonl").is_file()  # the engine ran it


def test_classify_verb_and_library(trained, tmp_path, capsys) -> None:
    out, _ = trained
    model, tok = load_classifier(out / "model")
    got = classify(model, tok, ["the film was awful", "a lovely story"])
    assert [g["label"] for g in got] == ["neg", "pos"]
    lines = tmp_path / "texts.txt"
    lines.write_text("the plot was dull\n\nquite good actors\n")
    assert main(["classify", str(out / "model"), "--file", str(lines), "--json"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [p["label"] for p in printed] == ["neg", "pos"]
    assert set(printed[0]["probabilities"]) == {"neg", "pos"}


def test_bad_inputs_have_clear_messages(trained, tmp_path, capsys) -> None:
    out, _ = trained
    model, tok = load_classifier(out / "model")
    with pytest.raises(ValueError, match="text number 2 is empty"):
        classify(model, tok, ["good", "   "])
    long_text = " ".join(["film"] * 100)  # the model's position table has 32 rows
    with pytest.warns(UserWarning, match="100 tokens but the model takes 30.*cut off"):
        assert classify(model, tok, [long_text])[0]["label"] in ("neg", "pos")
    with pytest.raises(ValueError, match="100 tokens but the model takes 30"):
        classify(model, tok, [long_text], overflow="error")
    with pytest.raises(ValueError, match=r"longer than the position table allows \(32\)"):
        model(input_ids=torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match=r"label\(s\) \['meh'\] never occur in the training rows"):
        LabelSet(["neg", "pos"]).encode(Rows(["fine"], ["meh"], "dev.csv"))
    other = tmp_path / "gpt-ckpt"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"family": "gpt", "dim": 8}))
    with pytest.raises(ValueError, match="holds a gpt checkpoint"):
        load_classifier(other)
    assert main(["classify", str(other), "hello"]) == 2
    assert "holds a gpt checkpoint" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds a gpt checkpoint, not a bert one"):
        Bert.load(other)
    bad_csv = tmp_path / "rows.csv"
    bad_csv.write_text("text,label\ngood film,pos\n,neg\n")
    with pytest.raises(ValueError, match=r"rows.csv:3: empty text"):
        read_labelled(bad_csv)


def test_encoder_pairs_and_empty_text() -> None:
    enc = BertEncoder(_tokenizer(), max_len=8)
    assert enc.encode("")["input_ids"] == [enc.cls_id, enc.sep_id]
    pair = enc.encode("good film", "bad plot")
    assert pair["input_ids"][0] == enc.cls_id and pair["input_ids"].count(enc.sep_id) == 2
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_scores_f1_and_confusion() -> None:
    s = scores([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], 2)
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["f1"] == pytest.approx(2 / 3)  # precision 2/3, recall 2/3 for class 1
    assert s["confusion"] == [[1, 1], [1, 2]]


def test_mean_pooling_variant_reads_real_tokens_only() -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, ffn_dim=32, max_seq_len=16,
                        head="sequence", pooling="mean", dropout=0.0, attn_dropout=0.0)
    model = Bert(config).eval()
    ids = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 7, 9, 3, 5, 3]])
    mask = (ids != 0).long()
    mask[1] = 1
    with torch.no_grad():
        padded = model(input_ids=ids[:1], attention_mask=mask[:1]).logits
        trimmed = model(input_ids=ids[:1, :4]).logits  # the same text without padding
    torch.testing.assert_close(padded, trimmed, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        BertConfig(pooling="max")
