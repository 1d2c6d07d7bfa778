"""Checkpoints: never unpickle, refuse a model that does not fit, ignore incomplete folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from glassformer.train import CheckpointError, TrainConfig, Trainer, latest_checkpoint
from glassformer.train.checkpoint import is_complete, list_checkpoints, load_train_state

from .tiny import TinyLM, build, make_dataset


def train(tmp_path: Path, model: TinyLM | None = None, steps: int = 2, resume: bool = False):
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), max_steps=steps, batch_size=4, save_interval=2,
                      eval_interval=0, progress=False, plot=False)
    return Trainer(model or build(), cfg, make_dataset(32)).fit(resume=resume)


def refresh_meta(folder: Path) -> None:
    """Make a tampered folder look complete, as an attacker could."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["files"] = {name: (folder / name).stat().st_size for name in meta["files"]}
    (folder / "meta.json").write_text(json.dumps(meta))


class Payload:
    """Unpickling this object runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_crafted_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    train(tmp_path)
    folder = tmp_path / "run" / "checkpoints" / "step-00000002"
    marker = tmp_path / "pwned.txt"
    torch.save({"format": 1, "step": 2, "optimizer": Payload(marker)}, folder / "train_state.pt")
    refresh_meta(folder)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") == folder

    with pytest.raises(CheckpointError, match="refused to load"):
        train(tmp_path, steps=4, resume=True)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_train_state(folder)
    assert not marker.exists(), "the payload ran"

    # the payload is live: a plain (unsafe) load would have run it, so the check above can fail
    torch.load(folder / "train_state.pt", weights_only=False)
    assert marker.read_text() == "pwned"


def test_pickle_in_place_of_safetensors_is_refused(tmp_path: Path) -> None:
    train(tmp_path)
    folder = tmp_path / "run" / "checkpoints" / "step-00000002"
    marker = tmp_path / "pwned.txt"
    torch.save(Payload(marker), folder / "model.safetensors")
    refresh_meta(folder)
    with pytest.raises(CheckpointError, match="safetensors"):
        train(tmp_path, steps=4, resume=True)
    assert not marker.exists()


def test_resume_with_another_model_shape_lists_the_fields(tmp_path: Path) -> None:
    train(tmp_path)
    with pytest.raises(CheckpointError) as info:
        train(tmp_path, model=build(dim=32, n_layers=3), steps=4, resume=True)
    message = str(info.value)
    assert "2 field(s)" in message
    assert "dim: checkpoint=16, now=32" in message and "n_layers: checkpoint=2, now=3" in message


def test_incomplete_folders_are_never_picked(tmp_path: Path) -> None:
    train(tmp_path, steps=4)
    root = tmp_path / "run" / "checkpoints"
    assert [s for s, _ in list_checkpoints(root)] == [2, 4]
    # a torn copy (as a non-atomic file system might leave): a file shorter than recorded
    torn = root / "step-00000006"
    shutil.copytree(root / "step-00000004", torn)
    with open(torn / "model.safetensors", "r+b") as f:
        f.truncate(100)
    # a folder without meta.json (the write died before its last file)
    no_meta = root / "step-00000008"
    shutil.copytree(root / "step-00000004", no_meta)
    (no_meta / "meta.json").unlink()
    # a temporary folder of a write in progress
    shutil.copytree(root / "step-00000004", root / ".tmp-step-00000010-123")
    assert not is_complete(torn) and not is_complete(no_meta)
    assert latest_checkpoint(root) == root / "step-00000004"
    summary = train(tmp_path, steps=6, resume=True)  # resumes from step 4 and replaces the torn step 6
    assert summary.step == 6 and is_complete(torn)
    assert not (root / ".tmp-step-00000010-123").exists()  # leftovers are cleaned up
    loaded = TinyLM.load(torn)  # a checkpoint is also a model folder
    assert isinstance(loaded, TinyLM)
