"""The whole training path: text -> token files -> the training engine -> a GPT that has memorised it."""

from __future__ import annotations

import pytest
import torch

from glassformer.data import prepare
from glassformer.data.prepare import causal_lm_data
from glassformer.models import load_model
from glassformer.models.gpt import GPT, GPTConfig
from glassformer.registry import DataRequest, get
from glassformer.tokenizers import load_tokenizer
from glassformer.train.config import TrainConfig
from glassformer.train.trainer import Trainer

TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n"
)


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_tiny_model_overfits_tiny_text(variant: str, tmp_path) -> None:
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    style = {} if variant == "gpt2" else dict(pos_encoding="rope", norm="rmsnorm", activation="swiglu", bias=False)
    config = GPTConfig(vocab_size=64, max_seq_len=32, n_layers=2, n_heads=2, dim=64, **style)
    torch.manual_seed(0)
    model = GPT(config)
    train_config = TrainConfig(
        out_dir=str(tmp_path / "run"), max_steps=150, batch_size=8, lr=5e-3, warmup_steps=5, weight_decay=0.0,
        eval_interval=0, eval_batches=2, log_interval=25, save_interval=150, progress=False, plot=False, device="cpu",
    )  # fmt: skip
    args = DataRequest(get("shakespeare-char"), {"text": str(src), "val_fraction": 0.3})
    train_data, eval_data = causal_lm_data(train_config, config, args)
    summary = Trainer(model, train_config, train_data, eval_data).fit()
    assert summary.final_loss < 0.1, summary.final_loss

    # the run folder holds what generation needs: weights + config (best/) and the tokenizer;
    # reading the training part of the text, the model predicts (nearly) every next character
    trained = load_model(tmp_path / "run" / "best")
    tokenizer = load_tokenizer(tmp_path / "run")
    memorised = torch.tensor([tokenizer.encode(TEXT[: int(len(TEXT) * 0.7)])])
    with torch.no_grad():
        hits = [
            trained(memorised[:, max(0, end - 32) : end]).logits[0, -1].argmax() == memorised[0, end]
            for end in range(8, memorised.shape[1])
        ]
    assert sum(hits) / len(hits) > 0.95


def test_train_data_checks_vocab_and_options(tmp_path) -> None:
    src = tmp_path / "text.txt"
    src.write_text(TEXT, encoding="utf-8")
    train_config = TrainConfig(out_dir=str(tmp_path / "run"), progress=False)
    small = GPTConfig(vocab_size=10, max_seq_len=16, n_layers=1, n_heads=2, dim=16)
    with pytest.raises(ValueError, match=r"pass model.vocab_size=\d+"):
        causal_lm_data(train_config, small, _request({"text": str(src)}))
    with pytest.raises(ValueError, match=r"unknown data option: unknown key .txt. \(did you mean .text.\?\)"):
        causal_lm_data(train_config, small, _request({"txt": str(src)}))
    data_dir = tmp_path / "prepared"
    prepare(src, "char", data_dir, progress=False)
    ok = small.replace(vocab_size=64)
    with pytest.raises(ValueError, match="data.block_size=17"):
        causal_lm_data(train_config, ok, _request({"dir": str(data_dir), "block_size": 17}))


def _request(options: dict) -> DataRequest:
    return DataRequest(get("shakespeare-char"), options)
