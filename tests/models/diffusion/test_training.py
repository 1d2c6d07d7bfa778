"""The engine trains the UNet: Fashion-MNIST data, exact resume, and sampling from the EMA it saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer.cli import main
from glassformer.data.images import FASHION_MNIST_DIR
from glassformer.models import load_model
from glassformer.models.diffusion.data import to_model_range
from glassformer.utils.weights import read_safetensors

needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST is not installed: run `make fashion-mnist`",
)
QUIET = ["progress=false", "plot=false", "eval_batches=1", "log_interval=1"]


def test_images_are_padded_black_and_scaled_to_the_model_range() -> None:
    images = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    x = to_model_range(images, 32)
    assert x.shape == (2, 1, 32, 32)
    assert x[:, :, 2:30, 2:30].eq(1).all() and x[:, :, :2].eq(-1).all() and x[:, :, :, 30:].eq(-1).all()
    with pytest.raises(ValueError, match="image_size >= 28"):
        to_model_range(images, 16)


@needs_fashion
def test_train_on_fashion_mnist_then_sample_from_its_ema(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "ddpm-fashion", "max_steps=2", "batch_size=4", f"out_dir={out}", "ema_decay=0.9",
            "save_interval=2", "eval_interval=2", *QUIET]  # fmt: skip
    assert main(args) == 0
    step = out / "checkpoints" / "step-00000002"
    assert (step / "ema.safetensors").is_file()
    grid = tmp_path / "grid.png"
    assert main(["sample", str(step), "--class", "bag", "--n", "2", "--steps", "2", "--out", str(grid)]) == 0
    assert grid.is_file()


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path: Path) -> None:
    """The step, noise and class-dropout draws come from the engine's checkpointed RNG."""
    common = ["ddpm-fashion-tiny", "--data", "example", "batch_size=2", "save_interval=2", "eval_interval=0",
              "decay_steps=4", *QUIET]  # the same learning-rate curve in both runs
    assert main(["train", *common, "max_steps=4", f"out_dir={tmp_path / 'straight'}"]) == 0
    assert main(["train", *common, "max_steps=2", f"out_dir={tmp_path / 'split'}"]) == 0
    assert main(["train", *common, "max_steps=4", f"out_dir={tmp_path / 'split'}", "--resume"]) == 0
    final = "checkpoints/step-00000004/model.safetensors"
    straight, split = read_safetensors(tmp_path / "straight" / final), read_safetensors(tmp_path / "split" / final)
    for key, tensor in straight.items():
        assert torch.equal(split[key], tensor), key
    assert type(load_model(tmp_path / "split" / "checkpoints" / "step-00000004")).__name__ == "DiffusionUNet"
