"""Checkpoint averaging: the mean of the newest k checkpoints, written as a model folder that loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassformer.train.averaging import AVERAGE_RECORD, average_checkpoints, average_last_checkpoints
from glassformer.train.checkpoint import CheckpointError, load_weights, save_checkpoint
from glassformer.utils.weights import read_safetensors, write_safetensors

from .tiny import TinyLM, build


def _save(root: Path, step: int, model: TinyLM) -> Path:
    return save_checkpoint(root, step, model=model, model_config=model.config.to_dict(), family=None,
                           train_config={}, train_state={})  # fmt: skip


def _run(root: Path, steps: tuple[int, ...]) -> dict[int, TinyLM]:
    """One checkpoint per step, each from a differently seeded model (distinct weights)."""
    models = {step: build(seed=step) for step in steps}
    for step, model in models.items():
        _save(root, step, model)
    return models


def test_the_newest_k_are_averaged_and_the_folder_loads(tmp_path: Path) -> None:
    models = _run(tmp_path / "checkpoints", (10, 20, 30, 40))
    out = average_last_checkpoints(tmp_path / "checkpoints", 3, tmp_path / "averaged")
    assert json.loads((out / AVERAGE_RECORD).read_text())["steps"] == [20, 30, 40]
    merged = build(seed=99)
    load_weights(merged, out)
    for name, tensor in merged.state_dict().items():
        expected = sum(models[s].state_dict()[name] for s in (20, 30, 40)) / 3
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
    assert merged.head.weight is merged.tok.weight  # the tied head stays tied after loading
    assert not torch.equal(merged.tok.weight, models[40].tok.weight)
    assert json.loads((out / "config.json").read_text())["dim"] == models[40].config.dim


def test_more_than_kept_takes_all_and_one_is_exact(tmp_path: Path) -> None:
    models = _run(tmp_path / "checkpoints", (1, 2))
    out = average_last_checkpoints(tmp_path / "checkpoints", 5, tmp_path / "avg")
    assert json.loads((out / AVERAGE_RECORD).read_text())["steps"] == [1, 2]
    single = average_checkpoints([tmp_path / "checkpoints" / "step-00000002"])
    assert all(torch.equal(v, models[2].state_dict()[k]) for k, v in single.items())  # float64 sum: bit-exact
    again = average_last_checkpoints(tmp_path / "checkpoints", 1, out)  # an existing folder is replaced
    assert json.loads((again / AVERAGE_RECORD).read_text())["steps"] == [2]


def test_checkpoints_of_different_shapes_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "checkpoints", 1, build(seed=1))
    _save(tmp_path / "checkpoints", 2, build(seed=2, dim=32))
    with pytest.raises(CheckpointError, match="one run"):
        average_last_checkpoints(tmp_path / "checkpoints", 2, tmp_path / "avg")


def test_integer_tensors_must_agree(tmp_path: Path) -> None:
    for i, count in enumerate((3, 3, 4)):
        write_safetensors(
            {"w": torch.full((2,), float(i)), "count": torch.tensor([count])},
            tmp_path / f"c{i}" / "model.safetensors",
        )
    mean = average_checkpoints([tmp_path / "c0", tmp_path / "c1"])
    assert torch.equal(mean["w"], torch.full((2,), 0.5)) and torch.equal(mean["count"], torch.tensor([3]))
    assert (
        mean["count"].dtype == torch.int64 and read_safetensors(tmp_path / "c0")["w"].dtype == mean["w"].dtype
    )
    with pytest.raises(CheckpointError, match="integer tensor count"):
        average_checkpoints([tmp_path / "c0", tmp_path / "c2"])


def test_nothing_to_average(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        average_last_checkpoints(tmp_path / "missing", 3, tmp_path / "avg")
    with pytest.raises(ValueError, match="at least one"):
        average_checkpoints([])
    with pytest.raises(ValueError, match="k=0"):
        average_last_checkpoints(tmp_path, 0, tmp_path / "avg")
    with pytest.raises(CheckpointError, match="not found"):
        average_checkpoints([tmp_path / "nowhere"])
