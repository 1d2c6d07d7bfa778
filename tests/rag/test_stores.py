"""Vector stores: recall against the exact scan on real-sentence embeddings, add and delete in
place, save/open round trips, and a crash mid-save that leaves the previous version usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glassformer.rag import stores
from glassformer.rag.stores import (
    ExactStore,
    FaissStore,
    QdrantStore,
    make_store,
    open_store,
    recall_vs_exact,
)


@pytest.fixture(scope="module")
def corpus(sentence_vectors: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """1,800 vectors to store, and 200 held-out sentences as queries."""
    ids = [f"s{i}" for i in range(1800)]
    return ids, sentence_vectors[:1800], sentence_vectors[1800:]


@pytest.fixture(scope="module")
def exact(corpus) -> ExactStore:
    ids, vectors, _ = corpus
    store = ExactStore(384)
    store.add(ids, vectors, [{"n": i} for i in range(len(ids))])
    return store


ENGINES = {
    "faiss-hnsw": lambda: FaissStore(384, hnsw_from=0),
    "faiss-exact": lambda: FaissStore(384),
    "qdrant-local": lambda: QdrantStore(384),
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_recall_at_10_against_exact(engine: str, corpus, exact: ExactStore) -> None:
    ids, vectors, queries = corpus
    store = ENGINES[engine]()
    store.add(ids, vectors, [{"n": i} for i in range(len(ids))])
    assert recall_vs_exact(store, exact, queries, k=10) >= 0.98
    if engine == "faiss-hnsw":
        assert store.approximate


def test_exact_store_is_the_brute_force_ranking(corpus, exact: ExactStore) -> None:
    _, vectors, queries = corpus
    scores = vectors @ queries[0]
    expected = [f"s{i}" for i in np.argsort(-scores)[:5]]
    assert [ident for ident, _ in exact.search(queries[0], 5)] == expected


@pytest.mark.parametrize("engine", list(ENGINES))
def test_add_and_delete_in_place_then_round_trip(engine: str, corpus, tmp_path: Path) -> None:
    ids, vectors, _ = corpus
    store = ENGINES[engine]()
    store.add(ids[:500], vectors[:500], [{"n": i} for i in range(500)])
    index_before = getattr(store, "index", None)
    store.delete(ids[:50])  # under a quarter of the store: no compaction
    store.add(ids[500:600], vectors[500:600], [{"n": i} for i in range(500, 600)])
    assert getattr(store, "index", None) is index_before  # the same FAISS index object: no rebuild
    assert len(store) == 550
    hits = store.search(vectors[10], 5)
    assert "s10" not in [h for h, _ in hits] and len(hits) == 5  # deleted, and k hits all the same
    assert store.search(vectors[550], 1)[0][0] == "s550"  # added later, found
    store.save(tmp_path / "store")
    reopened = open_store(tmp_path / "store")
    assert type(reopened) is type(store) and len(reopened) == 550
    before, after = store.search(vectors[550], 3), reopened.search(vectors[550], 3)
    assert [h for h, _ in after] == [h for h, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-5)
    assert reopened.payloads["s550"] == {"n": 550}


def test_many_deletes_compact_the_faiss_graph(corpus) -> None:
    ids, vectors, _ = corpus
    store = FaissStore(384, hnsw_from=0)
    store.add(ids[:400], vectors[:400])
    store.delete(ids[:150])
    assert len(store.labels) == 250 and store.approximate
    assert store.search(vectors[200], 1)[0][0] == "s200"


def test_a_crash_while_saving_leaves_the_previous_version(corpus, tmp_path: Path, monkeypatch) -> None:
    ids, vectors, _ = corpus
    store = FaissStore(384, hnsw_from=0)
    store.add(ids[:300], vectors[:300])
    store.save(tmp_path / "store")
    store.add(ids[300:600], vectors[300:600])

    def half_written(folder: Path) -> None:
        (folder / "labels.json").write_text("[", encoding="utf-8")  # a torn file, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(store, "write", half_written)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path / "store")
    reopened = open_store(tmp_path / "store")
    assert len(reopened) == 300 and reopened.search(vectors[7], 1)[0][0] == "s7"
    assert len(list((tmp_path / "store").glob("v-*"))) == 1  # the torn version was removed


def test_bad_input_is_named(corpus) -> None:
    ids, vectors, _ = corpus
    store = make_store("exact", 384)
    with pytest.raises(ValueError, match=r"\(N, 384\)"):
        store.add(ids[:2], vectors[:2, :10])
    with pytest.raises(ValueError, match="one to one"):
        store.add(ids[:3], vectors[:2])
    with pytest.raises(ValueError, match="did you mean 'faiss'"):
        make_store("fiass", 384)
    with pytest.raises(FileNotFoundError, match="CURRENT"):
        stores.open_store(Path("/nonexistent/store"))
