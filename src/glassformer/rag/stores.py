"""Vector stores behind one small interface: exact NumPy, FAISS, and Qdrant.

Every store keeps unit vectors under string ids with a JSON payload each, and ranks by inner
product (the cosine, for unit vectors). :class:`ExactStore` scans every vector: it is the
reference the others are measured against (:func:`recall_vs_exact`).

:class:`FaissStore` searches exactly (``IndexFlatIP``) below ``hnsw_from`` vectors (default
20,000) and switches to an HNSW graph above. Why: a flat scan of 20k x 384 floats takes about a
millisecond and is always right, while an HNSW graph costs build time and memory and gives up a
little recall; only past tens of thousands of vectors does the scan become the slow part. HNSW
rather than IVF because it needs no training on a sample (an IVF index trained on the first
documents goes stale as others are added) and it keeps its recall as the store grows. FAISS's
HNSW cannot remove a vector, so ``delete`` marks it dead and searches skip the dead through an
ID selector: no rebuild. Once dead vectors are a quarter of the graph, it is compacted (rebuilt
from the live vectors), which keeps the selector from starving the graph search.

:class:`QdrantStore` talks to Qdrant: ``url=`` for a server or cluster in production, or the
client's embedded local mode (no server: what the tests use; it scans every point, so it is
exact, while a server builds HNSW graphs). Qdrant or Milvus? Both are open
vector databases with HNSW, payload filtering, replication and sharding. Milvus is built for very
large deployments as several services (coordinators, query and data nodes, etcd, object storage,
a message log), with many index types (IVF, DiskANN, GPU); its local "Milvus Lite" is a separate
embedded engine. Qdrant is one binary (Rust) that scales out to a cluster, and its Python client
runs the same API in process, so the code tested here without a server is the code that talks to
a cluster. For documentation-sized corpora (thousands to millions of chunks) the single binary
with an identical embedded mode is the better trade; Milvus pays off at billions of vectors.

Saving is atomic (:func:`publish`): a store is written into a fresh version folder and a one-line
``CURRENT`` file is then replaced to point at it, so a crash in the middle of writing leaves the
previous version what ``open`` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from glassformer.utils.config import write_text_atomic
from glassformer.utils.suggest import did_you_mean

CURRENT = "CURRENT"
Hits = list[tuple[str, float]]


# -- atomic folders -----------------------------------------------------------------------------


def publish(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a new version of the folder ``path`` with ``write(version_folder)``, then make it current.

    Readers (:func:`current_version`) see the old version until ``CURRENT`` is replaced, and the
    new one after; if ``write`` raises, its half-written folder is removed and the old stays."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(dir=path, prefix="v-"))
    try:
        write(version)
        write_text_atomic(path / CURRENT, version.name + "\n")
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    for old in path.glob("v-*"):  # earlier versions: nobody opens them any more
        if old.name != version.name:
            shutil.rmtree(old, ignore_errors=True)
    return version


def current_version(path: str | os.PathLike[str], what: str = "store") -> Path:
    """The folder ``CURRENT`` points to in ``path``."""
    path = Path(path)
    pointer = path / CURRENT
    if not pointer.is_file():
        raise FileNotFoundError(f"{path}: not a saved {what} (no {CURRENT} file); build one first")
    version = path / pointer.read_text(encoding="utf-8").strip()
    if not version.is_dir():
        raise FileNotFoundError(f"{path}: {CURRENT} names {version.name}, which is missing; rebuild the {what}")
    return version


# -- the interface ------------------------------------------------------------------------------


class VectorStore(ABC):
    """Unit vectors under string ids, each with a JSON payload, searched by inner product."""

    kind: ClassVar[str]

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.payloads: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.payloads)

    def __contains__(self, ident: object) -> bool:
        return ident in self.payloads

    @abstractmethod
    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any] | None = None) -> None:
        """Add (or replace) vectors; an id already present is overwritten."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove ids; unknown ids are ignored (deleting twice is harmless)."""

    @abstractmethod
    def search(self, query: np.ndarray, k: int) -> Hits:
        """The ``k`` best ``(id, score)`` for one query vector, best first."""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the store into ``path`` atomically (see :func:`publish`)."""
        return publish(path, self.write)

    @abstractmethod
    def write(self, folder: Path) -> None:
        """Write the store's files into an empty ``folder``."""

    @classmethod
    @abstractmethod
    def read(cls, folder: Path) -> VectorStore:
        """The store written into ``folder`` by :meth:`write`."""

    def _check(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any] | None) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (N, {self.dim}), got {tuple(vectors.shape)}")
        if len(ids) != len(vectors) or (payloads is not None and len(payloads) != len(ids)):
            raise ValueError(f"got {len(ids)} ids, {len(vectors)} vectors and "
                             f"{'no' if payloads is None else len(payloads)} payloads; they go one to one")
        if len(set(ids)) != len(ids):
            raise ValueError("ids must be unique within one add")
        return vectors

    def _query(self, query: np.ndarray, k: int) -> np.ndarray:
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.dim:
            raise ValueError(f"the query has {query.shape[0]} dimensions; this store holds {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return query

    def _write_meta(self, folder: Path, **extra: Any) -> None:
        meta = {"kind": self.kind, "dim": self.dim, **extra}
        (folder / "store.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (folder / "payloads.json").write_text(json.dumps(self.payloads), encoding="utf-8")


def _read_meta(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    meta = json.loads((folder / "store.json").read_text(encoding="utf-8"))
    payloads = json.loads((folder / "payloads.json").read_text(encoding="utf-8"))
    return meta, payloads


# -- exact --------------------------------------------------------------------------------------


class ExactStore(VectorStore):
    """Every vector scanned for every query (NumPy): the reference."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.ids: list[str] = []
        self.vectors = np.zeros((0, dim), dtype=np.float32)

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any] | None = None) -> None:
        vectors = self._check(ids, vectors, payloads)
        self.delete([i for i in ids if i in self.payloads])
        self.ids += list(ids)
        self.vectors = np.concatenate([self.vectors, vectors])
        self.payloads.update(zip(ids, payloads if payloads is not None else [None] * len(ids), strict=True))

    def delete(self, ids: Sequence[str]) -> None:
        gone = set(ids) & set(self.payloads)
        if not gone:
            return
        keep = [i for i, ident in enumerate(self.ids) if ident not in gone]
        self.ids = [self.ids[i] for i in keep]
        self.vectors = self.vectors[keep]
        for ident in gone:
            del self.payloads[ident]

    def search(self, query: np.ndarray, k: int) -> Hits:
        query = self._query(query, k)
        if not self.ids:
            return []
        scores = self.vectors @ query
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]  # by score, ties by insertion order
        return [(self.ids[i], float(scores[i])) for i in top]

    def write(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self.vectors)
        (folder / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        self._write_meta(folder)

    @classmethod
    def read(cls, folder: Path) -> ExactStore:
        meta, payloads = _read_meta(folder)
        store = cls(int(meta["dim"]))
        store.ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        store.vectors = np.load(folder / "vectors.npy")
        store.payloads = payloads
        return store


# -- faiss --------------------------------------------------------------------------------------


class FaissStore(VectorStore):
    """FAISS: exact below ``hnsw_from`` vectors, an HNSW graph (``hnsw_m`` links per node) above.

    ``ef_search``: how many candidates the graph search keeps (higher: better recall, slower)."""

    kind = "faiss"
    COMPACT_AT = 0.25  # rebuild once this share of the indexed vectors is dead

    def __init__(self, dim: int, *, hnsw_from: int = 20_000, hnsw_m: int = 32, ef_construction: int = 200,
                 ef_search: int = 128) -> None:
        super().__init__(dim)
        self.settings = dict(hnsw_from=hnsw_from, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
        self.labels: list[str | None] = []  # position in the FAISS index -> id (None: deleted)
        self.position: dict[str, int] = {}
        self.index = self._new_index(hnsw=hnsw_from <= 0)

    @property
    def approximate(self) -> bool:
        """Whether the index is an HNSW graph (else an exact flat scan)."""
        import faiss

        return isinstance(self.index, faiss.IndexHNSWFlat)

    def _new_index(self, hnsw: bool) -> Any:
        import faiss

        if not hnsw:
            return faiss.IndexFlatIP(self.dim)
        index = faiss.IndexHNSWFlat(self.dim, int(self.settings["hnsw_m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.settings["ef_construction"])
        index.hnsw.efSearch = int(self.settings["ef_search"])
        return index

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any] | None = None) -> None:
        vectors = self._check(ids, vectors, payloads)
        self.delete([i for i in ids if i in self.payloads])
        if not self.approximate and len(self) + len(ids) >= self.settings["hnsw_from"]:
            self._rebuild(hnsw=True)
        start = len(self.labels)
        self.index.add(vectors)
        self.labels += list(ids)
        self.position.update({ident: start + i for i, ident in enumerate(ids)})
        self.payloads.update(zip(ids, payloads if payloads is not None else [None] * len(ids), strict=True))

    def delete(self, ids: Sequence[str]) -> None:
        for ident in ids:
            position = self.position.pop(ident, None)
            if position is not None:
                self.labels[position] = None
                del self.payloads[ident]
        dead = len(self.labels) - len(self.position)
        if self.labels and dead / len(self.labels) >= self.COMPACT_AT:
            self._rebuild(hnsw=self.approximate)

    def _rebuild(self, hnsw: bool) -> None:
        """A fresh index of the live vectors (dead ones dropped, positions renumbered)."""
        live = [(ident, pos) for pos, ident in enumerate(self.labels) if ident is not None]
        vectors = (np.stack([self.index.reconstruct(pos) for _, pos in live]) if live
                   else np.zeros((0, self.dim), dtype=np.float32))
        self.index = self._new_index(hnsw)
        if live:
            self.index.add(vectors)
        self.labels = [ident for ident, _ in live]
        self.position = {ident: i for i, ident in enumerate(self.labels)}

    def search(self, query: np.ndarray, k: int) -> Hits:
        import faiss

        query = self._query(query, k)
        if not self.position:
            return []
        k = min(k, len(self.position))
        params = None
        if len(self.position) < len(self.labels):  # skip the dead inside the search, not after it
            alive = np.array([label is not None for label in self.labels])
            bitmap = np.packbits(alive, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bitmap))
            params = (faiss.SearchParametersHNSW(sel=selector, efSearch=int(self.settings["ef_search"]))
                      if self.approximate else faiss.SearchParameters(sel=selector))
        scores, positions = self.index.search(query[None, :], k, params=params)
        return [(str(self.labels[p]), float(s)) for s, p in zip(scores[0], positions[0], strict=True)
                if p >= 0 and self.labels[p] is not None]

    def write(self, folder: Path) -> None:
        import faiss

        faiss.write_index(self.index, str(folder / "faiss.index"))
        (folder / "labels.json").write_text(json.dumps(self.labels), encoding="utf-8")
        self._write_meta(folder, settings=self.settings)

    @classmethod
    def read(cls, folder: Path) -> FaissStore:
        import faiss

        meta, payloads = _read_meta(folder)
        store = cls(int(meta["dim"]), **meta["settings"])
        store.index = faiss.read_index(str(folder / "faiss.index"))
        if store.approximate:
            store.index.hnsw.efSearch = int(store.settings["ef_search"])
        store.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        store.position = {ident: i for i, ident in enumerate(store.labels) if ident is not None}
        store.payloads = payloads
        return store


# -- qdrant -------------------------------------------------------------------------------------


class QdrantStore(VectorStore):
    """Qdrant: ``url=`` a server or cluster (the data lives there; ``save`` records where), or
    ``url=None`` the client's in-process local mode (``save`` writes the points to the folder).

    Qdrant ids must be integers or UUIDs, so each string id maps to a UUID5 of itself; the string
    travels in the payload (``_id``)."""

    kind = "qdrant"
    BATCH = 512  # points per upsert request

    def __init__(self, dim: int, *, url: str | None = None, collection: str = "glassformer",
                 api_key: str | None = None) -> None:
        from qdrant_client import QdrantClient, models

        super().__init__(dim)
        self.url, self.collection = url, collection
        self.client = QdrantClient(url=url, api_key=api_key) if url else QdrantClient(location=":memory:")
        if not self.client.collection_exists(collection):
            self.client.create_collection(collection, vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.DOT))
        elif url:
            self.payloads = self._remote_payloads()

    @staticmethod
    def point_id(ident: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, ident))

    def _remote_payloads(self) -> dict[str, Any]:
        payloads: dict[str, Any] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1024, offset=offset, with_payload=True)
            for point in points:
                payload = dict(point.payload or {})
                payloads[payload.pop("_id")] = payload.get("data")
            if offset is None:
                return payloads

    def add(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[Any] | None = None) -> None:
        from qdrant_client import models

        vectors = self._check(ids, vectors, payloads)
        payloads = list(payloads) if payloads is not None else [None] * len(ids)
        for start in range(0, len(ids), self.BATCH):
            points = [models.PointStruct(id=self.point_id(ident), vector=vectors[i].tolist(),
                                         payload={"_id": ident, "data": payloads[i]})
                      for i, ident in enumerate(ids[start : start + self.BATCH], start=start)]
            self.client.upsert(self.collection, points=points, wait=True)
        self.payloads.update(zip(ids, payloads, strict=True))

    def delete(self, ids: Sequence[str]) -> None:
        from qdrant_client import models

        present = [i for i in ids if i in self.payloads]
        if not present:
            return
        self.client.delete(self.collection, points_selector=models.PointIdsList(
            points=[self.point_id(i) for i in present]), wait=True)
        for ident in present:
            del self.payloads[ident]

    def search(self, query: np.ndarray, k: int) -> Hits:
        query = self._query(query, k)
        if not self.payloads:
            return []
        result = self.client.query_points(self.collection, query=query.tolist(), limit=k, with_payload=["_id"])
        return [(str(p.payload["_id"]), float(p.score)) for p in result.points]

    def _vectors(self) -> tuple[list[str], np.ndarray]:
        ids, rows, offset = [], [], None
        while True:
            points, offset = self.client.scroll(self.collection, limit=1024, offset=offset, with_payload=["_id"],
                                                with_vectors=True)
            for point in points:
                ids.append(str(point.payload["_id"]))
                rows.append(np.asarray(point.vector, dtype=np.float32))
            if offset is None:
                return ids, (np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32))

    def write(self, folder: Path) -> None:
        if not self.url:
            ids, vectors = self._vectors()
            np.save(folder / "vectors.npy", vectors)
            (folder / "ids.json").write_text(json.dumps(ids), encoding="utf-8")
        self._write_meta(folder, url=self.url, collection=self.collection)

    @classmethod
    def read(cls, folder: Path) -> QdrantStore:
        meta, payloads = _read_meta(folder)
        store = cls(int(meta["dim"]), url=meta.get("url"), collection=meta.get("collection", "glassformer"))
        if not store.url:
            ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
            store.add(ids, np.load(folder / "vectors.npy"), [payloads[i] for i in ids])
        return store


# -- choosing and measuring ---------------------------------------------------------------------

STORES: dict[str, type[VectorStore]] = {"exact": ExactStore, "faiss": FaissStore, "qdrant": QdrantStore}


def store_class(kind: str) -> type[VectorStore]:
    if kind not in STORES:
        raise ValueError(f"unknown store {kind!r}{did_you_mean(kind, STORES)}; choose one of {', '.join(STORES)}")
    return STORES[kind]


def make_store(kind: str, dim: int, **options: Any) -> VectorStore:
    """A new empty store of ``kind`` (``exact``, ``faiss`` or ``qdrant``)."""
    return store_class(kind)(dim, **options)


def open_store(path: str | os.PathLike[str]) -> VectorStore:
    """The store saved in ``path`` (its current version), whichever kind it is."""
    folder = current_version(path)
    meta = json.loads((folder / "store.json").read_text(encoding="utf-8"))
    return store_class(str(meta.get("kind"))).read(folder)


def recall_vs_exact(store: VectorStore, exact: VectorStore, queries: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-``k`` ids that ``store`` also returns in its top ``k``.

    Ties at the cut of the exact list make "the" top ``k`` ambiguous; with real embeddings they
    are rare enough to ignore."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if len(queries) == 0:
        raise ValueError("recall_vs_exact needs at least one query")
    shares = []
    for query in queries:
        truth = {ident for ident, _ in exact.search(query, k)}
        if truth:
            found = {ident for ident, _ in store.search(query, k)}
            shares.append(len(truth & found) / len(truth))
    return float(np.mean(shares)) if shares else 1.0
