"""The training loop in-process: accumulation, data kinds and resume, NaN, EMA, best/early stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from glassformer.models.base import ModelOutput
from glassformer.train import (
    EMA,
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    latest_checkpoint,
)
from glassformer.train.checkpoint import list_checkpoints, load_weights
from glassformer.utils.config import ConfigError

from .tiny import build, make_dataset


def config(tmp_path: Path, name: str = "run", **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / name), max_steps=4, batch_size=4, lr=3e-3, save_interval=2, log_interval=1,
                eval_interval=0, progress=False, plot=False)
    base.update(kw)
    return TrainConfig(**base)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_grad_accumulation_equals_one_big_batch(tmp_path: Path) -> None:
    data = make_dataset(64)
    big, small = build(dropout=0.0), build(dropout=0.0)
    start = weights(big)
    Trainer(big, config(tmp_path, "big", batch_size=8, grad_accum_steps=1), data).fit()
    Trainer(small, config(tmp_path, "small", batch_size=2, grad_accum_steps=4), data).fit()
    a, b = weights(big), weights(small)
    assert any(not torch.equal(a[k], start[k]) for k in a), "training did not move the weights"
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)


def _as_callable(data):
    def get_batch(split: str, step: int, generator: torch.Generator):
        idx = torch.randint(0, len(data), (4,), generator=generator).tolist()
        return torch.utils.data.default_collate([data[i] for i in idx])

    return get_batch


def _as_loader(data):
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    return DataLoader(data, batch_size=4, sampler=sampler, drop_last=True)


@pytest.mark.parametrize("kind", ["map", "callable", "iterable"])
def test_resume_is_bitwise_for_every_data_kind(tmp_path: Path, kind: str) -> None:
    """6 steps in one go == 3 steps, a new process state, then 3 more (dropout on, epochs wrap)."""
    data = make_dataset(24)  # 6 batches of 4: the iterable and the map-style set wrap an epoch
    make = {"map": lambda: data, "callable": lambda: _as_callable(data), "iterable": lambda: _as_loader(data)}[kind]
    common = dict(decay_steps=6, warmup_steps=1, ema_decay=0.8, grad_accum_steps=2, batch_size=2 if kind == "map" else 4)
    whole = build()
    Trainer(whole, config(tmp_path, "whole", max_steps=6, **common), make()).fit()

    first = build()
    Trainer(first, config(tmp_path, "split", max_steps=3, save_interval=10, **common), make()).fit()
    torch.manual_seed(12345)  # a different global RNG state: the checkpoint must restore it
    second = build(seed=99)  # different initial weights: the checkpoint must replace them
    summary = Trainer(second, config(tmp_path, "split", max_steps=6, save_interval=10, **common), make()).fit(resume=True)
    assert summary.step == 6
    a, b = weights(whole), weights(second)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume ({kind} data)"
    log = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


class ExplodesAt(nn.Module):
    """Wraps TinyLM; the loss turns NaN at the given forward call."""

    def __init__(self, call: int) -> None:
        super().__init__()
        self.inner, self.call, self.calls = build(dropout=0.0), call, 0

    def forward(self, **batch) -> ModelOutput:
        out = self.inner(**batch)
        self.calls += 1
        if self.calls == self.call:
            out.loss = out.loss * float("nan")
        return out


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    model = ExplodesAt(call=5)
    cfg = config(tmp_path, max_steps=10, save_interval=2, lr=1e-2)
    with pytest.raises(NonFiniteLossError) as info:
        Trainer(model, cfg, make_dataset(64)).fit()
    message = str(info.value)
    assert "step 5" in message and "lower learning rate" in message and "step-00000004" in message
    assert info.value.step == 5
    root = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(root) == root / "step-00000004"
    assert [s for s, _ in list_checkpoints(root)] == [2, 4]
    # the weights were not updated with the NaN step: they equal the step-4 checkpoint
    saved = ExplodesAt(call=0)
    load_weights(saved, root / "step-00000004")
    for k, v in saved.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stop_reason"] == "diverged"


class Drift(nn.Module):
    """Training pushes ``w`` up (loss -w); the eval loss is +w, so it gets worse at every evaluation."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2, 2))

    def forward(self, sign: torch.Tensor) -> ModelOutput:
        return ModelOutput(loss=sign[0] * self.w.sum())


def test_best_checkpoint_and_early_stopping(tmp_path: Path) -> None:
    def get_batch(split, step, generator):
        return {"sign": torch.tensor([-1.0 if split == "train" else 1.0])}

    cfg = config(tmp_path, max_steps=100, eval_interval=2, eval_batches=1, early_stopping_patience=3,
                 weight_decay=0.0, schedule="constant", grad_clip=0.0, plot=True)
    summary = Trainer(Drift(), cfg, get_batch, get_batch).fit()
    assert summary.stop_reason == "early_stopping"
    assert summary.step == 8 and summary.best_step == 2  # evals at 2 (best), 4, 6, 8: three without improvement
    best = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    assert best["step"] == 2 and best["eval_loss"] == pytest.approx(summary.best_value)
    assert summary.last_eval["eval_loss"] > summary.best_value
    assert Path(summary.curve_path).is_file() and Path(summary.curve_path).stat().st_size > 5000
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000008"


def test_ema_follows_its_formula() -> None:
    layer = nn.Linear(2, 2)
    ema = EMA(layer, decay=0.9)
    start = layer.weight.detach().clone()
    values = [1.0, 2.0, 3.0]
    for v in values:
        with torch.no_grad():
            layer.weight.fill_(v)
        ema.update(layer)
    expected = start
    for v in values:
        expected = 0.9 * expected + 0.1 * v
    torch.testing.assert_close(ema.shadow["weight"], expected)
    with ema.applied_to(layer):
        torch.testing.assert_close(layer.weight.detach(), expected)
    assert torch.equal(layer.weight.detach(), torch.full((2, 2), 3.0))  # restored


def test_gradient_checkpointing_is_switched_on_and_changes_nothing(tmp_path: Path) -> None:
    data = make_dataset(32)
    plain, ckpt = build(), build()
    Trainer(plain, config(tmp_path, "plain", max_steps=2), data).fit()
    Trainer(ckpt, config(tmp_path, "ckpt", max_steps=2, gradient_checkpointing=True), data).fit()
    assert ckpt.stack.gradient_checkpointing and not plain.stack.gradient_checkpointing
    a, b = weights(plain), weights(ckpt)
    for k in a:  # recomputation replays the same dropout masks (torch.utils.checkpoint keeps the RNG)
        torch.testing.assert_close(a[k], b[k], atol=1e-7, rtol=0, msg=k)


def test_fp16_on_cpu_warns_and_trains_in_fp32(tmp_path: Path) -> None:  # bf16 on a CPU: test_precision.py
    with pytest.warns(UserWarning, match="fp32"):
        summary = Trainer(build(), config(tmp_path, max_steps=1, precision="fp16"), make_dataset(16)).fit()
    assert summary.precision == "fp32"


def test_keep_last_and_metrics_in_the_log(tmp_path: Path) -> None:
    summary = Trainer(build(), config(tmp_path, max_steps=5, save_interval=1, keep_last=2), make_dataset(32)).fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [4, 5]
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert {"loss", "lr", "grad_norm", "accuracy", "tok_per_s", "epoch"} <= set(record)
    assert summary.unit == "tok" and summary.seen == 5 * 4 * 8


def test_bad_inputs_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid keys"):
        TrainConfig.from_dict({"lerning_rate": 1e-3})
    with pytest.raises(ConfigError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        Trainer(build(), config(tmp_path, batch_size=8, grad_accum_steps=4), make_dataset(16)).fit()
    no_loss = [{"input_ids": d["input_ids"]} for d in make_dataset(16)]
    with pytest.raises(ValueError, match="returned no loss"):
        Trainer(build(), config(tmp_path, "b"), no_loss).fit()


def test_fresh_run_refuses_an_out_dir_with_checkpoints(tmp_path: Path) -> None:
    Trainer(build(), config(tmp_path, max_steps=2), make_dataset(16)).fit()
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(build(), config(tmp_path, max_steps=4), make_dataset(16)).fit()


def test_tensorboard_is_optional(tmp_path: Path) -> None:
    cfg = config(tmp_path, max_steps=1, tensorboard=True)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard"):
            Trainer(build(), cfg, make_dataset(16)).fit()
    else:
        Trainer(build(), cfg, make_dataset(16)).fit()
        assert any((tmp_path / "run" / "tensorboard").iterdir())
