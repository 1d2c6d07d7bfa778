"""Fixtures for CLIP retrieval: a saved tiny CLIP that speaks CLIP's BPE, and a folder of pictures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glassformer import registry
from glassformer.models.clip import CLIP
from glassformer.models.clip.retrieval import ClipCheckpoint, open_checkpoint
from glassformer.utils.paths import data_file

# CLIP's real token ids: the tiny twin's 99-token vocabulary cannot hold the BPE's output
BPE_IDS = {"vocab_size": 49408, "pad_token_id": 49407, "bos_token_id": 49406, "eos_token_id": 49407}


def tiny_bpe_clip(seed: int = 0) -> CLIP:
    """The tiny twin with random weights and CLIP's vocabulary (32x32 pictures in 8x8 patches)."""
    torch.manual_seed(seed)
    return registry.build("clip-shapes-tiny", **BPE_IDS).eval()


@pytest.fixture(scope="session")
def clip_merges() -> Path:
    """CLIP's merges file (the tokenizer of every checkpoint here), or a skip naming it."""
    path = data_file("tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz")
    if path is None:
        pytest.skip(
            "tokenizers/clip_bpe_simple_vocab_16e6.txt.gz is not in the shared data (set GLASSFORMER_DATA)"
        )
    return path


@pytest.fixture(scope="session")
def clip_checkpoint(clip_merges: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip-checkpoint")
    tiny_bpe_clip().save(folder)
    return folder


@pytest.fixture(scope="session")
def ckpt(clip_checkpoint: Path) -> ClipCheckpoint:
    """The saved tiny CLIP opened for retrieval once (the tokenizer takes a second to build)."""
    return open_checkpoint(clip_checkpoint)


@pytest.fixture
def make_clip() -> Callable[[int], CLIP]:
    return tiny_bpe_clip


@pytest.fixture
def make_pictures() -> Callable[..., list[Path]]:
    return write_pictures


def write_pictures(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` random pictures of several sizes and modes (RGB, gray, RGBA), named ``00.png`` ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (32, 32) if i % 3 == 0 else (40 + i, 24 + 2 * i)  # most need resizing to the model's 32x32
        channels = (3, 1, 4)[i % 3]  # RGB, gray, RGBA
        array = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        path = folder / f"{i:02d}.png"
        Image.fromarray(array.squeeze(-1) if channels == 1 else array).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def picture_folder(tmp_path: Path) -> Path:
    write_pictures(tmp_path / "pictures", 7)
    return tmp_path / "pictures"
