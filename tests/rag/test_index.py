"""The index: build, open, search, BM25 baseline, add/remove documents, refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from glassformer.rag import Bm25Retriever, build_index, open_index
from glassformer.rag.documents import ChunkSettings
from glassformer.rag.index import words


@pytest.fixture(scope="module")
def built(embedder, docs_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("index") / "docs-index"
    return build_index([docs_folder], out, store="exact", embedder=embedder, progress=False), out


def test_search_finds_the_answering_chunk_and_cites_it(built, docs: dict[str, str]) -> None:
    index, _ = built
    assert sorted(index.files) == sorted(docs)
    hit = index.search("How often does the trainer save a checkpoint?", k=2)[0]
    assert hit.chunk.file == "guide/training.md" and hit.chunk.heading == "Training"
    lines = docs["guide/training.md"].splitlines()[hit.chunk.start - 1 : hit.chunk.end]
    assert "every 500 steps" in "\n".join(lines)
    assert 0.3 < hit.score <= 1.0


def test_open_index_gives_the_same_results(built, embedder) -> None:
    index, out = built
    reopened = open_index(out, embedder=embedder)
    question = "which tokenizer never produces an unknown token?"
    assert [(h.chunk.id, round(h.score, 5)) for h in reopened.search(question, 3)] == \
        [(h.chunk.id, round(h.score, 5)) for h in index.search(question, 3)]
    assert [h.chunk.id for h in reopened.search(question, 3, rerank=True)][0] == index.search(question, 1)[0].chunk.id


def test_bm25_baseline_matches_rank_bm25(built) -> None:
    from rank_bm25 import BM25Okapi

    index, _ = built
    bm25 = Bm25Retriever.from_index(index)
    question = "learning rate warms up"
    chunks = list(index.chunks.values())
    reference = BM25Okapi([words(c.embedding_text()) for c in chunks])
    expected = np.asarray(reference.get_scores(question.split()))
    hits = bm25.search(question, k=len(chunks))
    assert hits[0].chunk.file == "guide/training.md"
    assert [h.score for h in hits] == pytest.approx(sorted(expected, reverse=True), abs=1e-9)


def test_add_and_remove_documents(embedder, make_docs, tmp_path: Path) -> None:
    folder = make_docs(tmp_path / "docs")
    index = build_index(folder, tmp_path / "index", store="faiss", embedder=embedder, progress=False)
    store_before, count = index.store.index, len(index)
    (folder / "guide" / "faq.md").write_text("# FAQ\n\nThe mascot of the project is a glass owl named Pim.\n")
    result = index.add_documents([folder / "guide" / "faq.md"])
    assert result.files == ["guide/faq.md"] and len(index) == count + 1
    assert index.store.index is store_before  # added in place
    reopened = open_index(tmp_path / "index", embedder=embedder)  # add_documents saved it
    assert reopened.search("What is the mascot called?", 1)[0].chunk.file == "guide/faq.md"
    assert index.add_documents([folder]).files == []  # nothing changed: nothing re-read
    assert index.remove_documents(["guide/faq.md"]) == ["guide/faq.md"]
    assert all(c.file != "guide/faq.md" for c in open_index(tmp_path / "index", embedder=embedder).chunks.values())
    with pytest.raises(KeyError, match="not in this index"):
        index.remove_documents(["guide/faq.md"])


def test_an_empty_folder_is_refused(embedder, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no documents under"):
        build_index(tmp_path / "empty", tmp_path / "index", embedder=embedder, progress=False)


def test_an_index_of_another_embedder_is_refused(built, embedder, tmp_path: Path) -> None:
    import copy

    _, out = built
    other = copy.copy(embedder)
    other.name = "sentence-transformers/all-mpnet-base-v2"
    with pytest.raises(ValueError, match="built with the embedder sentence-transformers/all-MiniLM-L6-v2"):
        open_index(out, embedder=other)
    shutil.copytree(out, tmp_path / "copy")
    impostor = copy.copy(embedder)  # the same name, other weights
    impostor.embed = lambda texts, **_: np.roll(embedder.embed(texts), 1, axis=1)  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="different weights"):
        open_index(tmp_path / "copy", embedder=impostor)


def test_a_question_too_long_is_cut_with_a_note(built) -> None:
    index, _ = built
    question = "How often does the trainer save a checkpoint? " * 30
    note = index.question_note(question)
    assert note is not None and "only its beginning was searched" in note
    with pytest.warns(UserWarning, match="only its beginning"):
        hits = index.search(question, 1)
    assert hits[0].chunk.file == "guide/training.md"
    with pytest.raises(ValueError, match="empty"):
        index.search("   ", 1)


def test_chunk_budget_beyond_the_embedder_is_refused(embedder, docs_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than the embedder reads"):
        build_index(docs_folder, tmp_path / "i", embedder=embedder, settings=ChunkSettings(max_tokens=300))
