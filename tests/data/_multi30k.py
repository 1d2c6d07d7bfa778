"""Shared by the Multi30k tests: the skip when the shared data are missing, a private cache, tiny
twins whose vocabulary holds a byte-level BPE, and one training step through the engine."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from glassformer import registry
from glassformer.train import TrainConfig, Trainer
from glassformer.utils.paths import data_file

TINY_VOCAB = 352  # the -tiny twins' 64/96 ids hold no byte alphabet; check_room suggests this size
SLICE = {"limit": 200, "val_limit": 16}  # pairs: the BPE and the batches come from this slice


def skip_without_multi30k() -> None:
    if data_file("multi30k", "task1", "raw", "train.en.gz") is None:
        pytest.skip("Multi30k is not in the shared data folder (multi30k/task1/raw under GLASSFORMER_DATA or ../shared/data)")


@pytest.fixture(scope="module")
def multi30k_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache of this module's own (merges and tokenizers), so no test reads another run's."""
    skip_without_multi30k()
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GLASSFORMER_CACHE", str(path))
        yield path


def tiny_config(preset_name: str) -> Any:
    """The preset's config with a vocabulary of ``TINY_VOCAB`` (T5's sentinels moved to its top)."""
    config = registry.get(preset_name).make_config()
    fields = {"vocab_size": TINY_VOCAB}
    if hasattr(config, "tgt_vocab_size"):
        fields["tgt_vocab_size"] = TINY_VOCAB
    if getattr(config, "sentinel_start_id", None) is not None:
        fields["sentinel_start_id"] = TINY_VOCAB - 1
    return config.replace(**fields)


def build_data(preset_name: str, out_dir: Path, data: str | None = None, steps: int = 1, **options: Any) -> tuple[Any, Any, Any, Any]:
    """``(config, train_config, train_data, eval_data)`` from the family's builder on the slice."""
    preset = registry.get(preset_name)
    config = tiny_config(preset_name)
    train_config = TrainConfig(out_dir=str(out_dir), max_steps=steps, batch_size=4, eval_interval=steps, eval_batches=2,
                               save_interval=100, log_interval=steps, progress=False, plot=False, lr=3e-3)  # fmt: skip
    builder = registry.data_builder(preset, data)
    train, val = builder(train_config, config, registry.DataRequest(preset, {**SLICE, **options}))
    return config, train_config, train, val


def train_one_step(preset_name: str, out_dir: Path, data: str | None = None, steps: int = 1, **options: Any) -> Any:
    """One optimizer step (or ``steps``) and one evaluation on the builder's batches; returns the summary."""
    config, train_config, train, val = build_data(preset_name, out_dir, data, steps, **options)
    torch.manual_seed(0)  # the same initial weights on every run
    model = registry.get(preset_name).build(config)
    summary = Trainer(model, train_config, train, val, model_config=config).fit()
    assert summary.step == steps
    assert summary.final_loss is not None and math.isfinite(summary.final_loss)
    assert math.isfinite(summary.last_eval["eval_loss"])
    return summary
