"""``glassformer train vit-fashion-tiny`` end to end on a small Fashion-MNIST-shaped IDX folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from glassformer.cli import main
from glassformer.data.images import fashion_mnist_data, fashion_mnist_sets


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_root(tmp_path: Path) -> Path:
    """48 random 28x28 images whose labels follow their mean brightness, so a few steps learn something."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 48)
    images = np.clip(rng.normal(labels[:, None, None] * 25.0, 10.0, (48, 28, 28)), 0, 255)
    root = tmp_path / "fashion"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte.gz", images)
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels)
    return root


def test_train_command_uses_the_augmenting_collate(fashion_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["train", "vit-fashion-tiny", f"out_dir={out}", "max_steps=4", "batch_size=8", "eval_interval=2",
                 "progress=false", "plot=false", f"data.root={fashion_root}", "data.val_fraction=0.25"])
    assert code == 0
    evals = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "eval_accuracy" in line]
    assert evals and 0.0 <= evals[-1]["eval_accuracy"] <= 1.0
    assert json.loads((out / "best" / "config.json").read_text())["family"] == "vit"


def test_the_builder_holds_validation_out_and_names_bad_options(fashion_root: Path) -> None:
    train, val = fashion_mnist_sets(root=fashion_root, val_fraction=0.25)
    assert (len(train), len(val)) == (36, 12)
    assert train.collate([train[i] for i in range(4)])["pixel_values"].shape == (4, 1, 28, 28)

    class Request:
        options = {"agument": "none"}

    class Model:
        in_channels, image_size = 1, 28

    with pytest.raises(ValueError, match="augment"):
        fashion_mnist_data(None, Model(), Request())
    with pytest.raises(ValueError, match="did you mean 'crop_flip'"):
        fashion_mnist_sets(root=fashion_root, augment="crop")
    Model.in_channels = 3
    Request.options = {}
    with pytest.raises(ValueError, match="28x28 grayscale"):
        fashion_mnist_data(None, Model(), Request())
