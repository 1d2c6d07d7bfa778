"""An index: the chunks of a set of documents, their vectors in a store, and how they were made.

On disk an index is a folder holding ``CURRENT`` and one version folder (``manifest.json``,
``chunks.jsonl``, ``store/``), published atomically (``stores.publish``): a crash while indexing
leaves the previous version the one that opens. The manifest names the embedder and keeps a
probe vector (the embedding of a fixed sentence), so opening an index with another embedder, or
with a different model under the same name, is refused instead of returning nonsense neighbours.

``Bm25Retriever`` ranks the same chunks by BM25 (``rank-bm25``) with the same ``search``
signature: the keyword baseline the dense retriever is compared with, and the second opinion
``search(..., rerank=True)`` fuses in.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from glassformer.rag.documents import (
    Chunk,
    ChunkSettings,
    ReadResult,
    file_digest,
    list_files,
    read_chunks,
    relative_name,
)
from glassformer.rag.embed import DEFAULT_MODEL, Embedder
from glassformer.rag.stores import VectorStore, current_version, make_store, publish, store_class

FORMAT = 1
PROBE = "A probe sentence: its embedding tells whether two embedders are the same model."
RRF_K = 60  # reciprocal-rank-fusion constant (Cormack et al. 2009): damps the weight of the top ranks
RERANK_POOL = 4  # rerank=True re-orders this many times k dense candidates
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk and its score (cosine similarity for dense search, BM25 for the baseline)."""

    chunk: Chunk
    score: float


def canonical_name(source: str) -> str:
    """One name per embedder, whichever alias opened it (``all-MiniLM-L6-v2`` is the hub id's alias)."""
    from glassformer.utils.weights import PACKAGED

    if source in PACKAGED:
        package = PACKAGED[source][0]
        return next((n for n, (p, _) in PACKAGED.items() if p == package and "/" in n), source)
    return source


def words(text: str) -> list[str]:
    """Lower-cased word tokens for BM25."""
    return WORD.findall(text.lower())


class Bm25Retriever:
    """BM25 (Okapi) over chunks: ``search(question, k)`` like :meth:`Index.search`."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        from rank_bm25 import BM25Okapi

        if not chunks:
            raise ValueError("Bm25Retriever needs at least one chunk")
        self.chunks = list(chunks)
        self.bm25 = BM25Okapi([words(c.embedding_text()) for c in self.chunks])

    @classmethod
    def from_index(cls, index: Index) -> Bm25Retriever:
        return cls(list(index.chunks.values()))

    def scores(self, question: str) -> np.ndarray:
        return np.asarray(self.bm25.get_scores(words(question)), dtype=np.float64)

    def search(self, question: str, k: int = 4, rerank: bool = False) -> list[Hit]:
        """The ``k`` best chunks by BM25 (``rerank`` is accepted for the same signature; BM25 has none)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        scores = self.scores(question)
        top = np.argsort(-scores, kind="stable")[:k]
        return [Hit(self.chunks[i], float(scores[i])) for i in top]


class Index:
    """Chunks, their vectors and the embedder that made them; ``path`` is where it saves."""

    def __init__(self, embedder: Embedder, store: VectorStore, chunks: dict[str, Chunk], manifest: dict[str, Any],
                 path: Path | None = None) -> None:
        self.embedder, self.store, self.chunks, self.manifest, self.path = embedder, store, chunks, manifest, path
        self._bm25: Bm25Retriever | None = None

    @property
    def root(self) -> Path:
        return Path(self.manifest["root"])

    @property
    def settings(self) -> ChunkSettings:
        return ChunkSettings(**self.manifest["chunking"])

    @property
    def files(self) -> dict[str, str]:
        """Indexed files (relative names) and the sha256 of the content indexed."""
        return self.manifest["files"]

    def __len__(self) -> int:
        return len(self.chunks)

    # -- changing ----------------------------------------------------------------------------

    def add_documents(self, paths: Iterable[str | os.PathLike[str]], progress: bool = False) -> ReadResult:
        """Index new or changed files (a changed file's old chunks are replaced; an unchanged one is
        left alone); saves when the index has a ``path``. Returns what was read and skipped."""
        _, files = list_files(paths)
        changed = [f for f in files if self.files.get(relative_name(f, self.root)) != file_digest(f)]
        result = read_chunks(changed, self.root, self.settings, self.embedder.count_tokens)
        self._drop_files(result.files)
        if result.chunks:
            vectors = self.embedder.embed([c.embedding_text() for c in result.chunks], progress=progress)
            self.store.add([c.id for c in result.chunks], vectors, [{"file": c.file} for c in result.chunks])
        self.chunks.update({c.id: c for c in result.chunks})
        for name in result.files:
            self.files[name] = file_digest(self.root / name)
        self.manifest["skipped"] = _merge_skipped(self.manifest.get("skipped", []), result)
        self._bm25 = None
        self._autosave()
        return result

    def remove_documents(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Forget files (relative names as cited, or paths); returns the names removed."""
        names = []
        for path in paths:
            name = str(path) if str(path) in self.files else relative_name(Path(path), self.root)
            if name not in self.files:
                raise KeyError(f"{path} is not in this index; indexed files include "
                               f"{', '.join(sorted(self.files)[:5])}")
            names.append(name)
        self._drop_files(names)
        for name in names:
            del self.files[name]
        self._bm25 = None
        self._autosave()
        return names

    def _drop_files(self, names: Iterable[str]) -> None:
        names = set(names)
        gone = [ident for ident, chunk in self.chunks.items() if chunk.file in names]
        self.store.delete(gone)
        for ident in gone:
            del self.chunks[ident]

    def _autosave(self) -> None:
        if self.path is not None:
            self.save(self.path)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to ``path`` atomically; later changes save there too."""
        def write(folder: Path) -> None:
            (folder / "store").mkdir()
            self.store.write(folder / "store")
            lines = (json.dumps(c.to_json(), ensure_ascii=False) for c in self.chunks.values())
            (folder / "chunks.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
            (folder / "manifest.json").write_text(json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8")

        self.path = Path(path)
        return publish(self.path, write)

    # -- searching ---------------------------------------------------------------------------

    def question_note(self, question: str) -> str | None:
        """The note for a question longer than the embedder reads (it is cut), else None."""
        tokens = self.embedder.count_tokens(question)
        if tokens <= self.embedder.room:
            return None
        return (f"the question has {tokens} word pieces; the embedder reads {self.embedder.room}, "
                "so only its beginning was searched for. Ask a shorter question")

    def bm25(self) -> Bm25Retriever:
        if self._bm25 is None:
            self._bm25 = Bm25Retriever.from_index(self)
        return self._bm25

    def search(self, question: str, k: int = 4, rerank: bool = False) -> list[Hit]:
        """The ``k`` chunks closest to ``question`` (cosine similarity), best first.

        ``rerank=True``: take ``4k`` dense candidates and re-order them by reciprocal-rank fusion of
        their dense rank and their BM25 rank among the candidates (scores stay cosines). Exact
        words (a function name, a flag) then count as well as meaning."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty: ask something")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not self.chunks:
            return []
        note = self.question_note(question)
        if note:
            warnings.warn(note, stacklevel=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cut is the note above
            query = self.embedder.embed([question])[0]
        pool = self.store.search(query, k * RERANK_POOL if rerank else k)
        hits = [Hit(self.chunks[ident], score) for ident, score in pool if ident in self.chunks]
        return self._fuse(question, hits)[:k] if rerank else hits[:k]

    def _fuse(self, question: str, hits: list[Hit]) -> list[Hit]:
        bm25 = self.bm25()
        position = {c.id: i for i, c in enumerate(bm25.chunks)}
        keyword = bm25.scores(question)[[position[h.chunk.id] for h in hits]]
        keyword_rank = np.empty(len(hits), dtype=int)
        keyword_rank[np.argsort(-keyword, kind="stable")] = np.arange(len(hits))
        fused = [1 / (RRF_K + dense) + 1 / (RRF_K + int(keyword_rank[dense])) for dense in range(len(hits))]
        order = sorted(range(len(hits)), key=lambda i: -fused[i])
        return [hits[i] for i in order]


def _merge_skipped(previous: list[list[str]], result: ReadResult) -> list[list[str]]:
    """Skipped files: those skipped now, plus earlier ones not read successfully since."""
    fresh = {name for name in result.files} | {name for name, _ in result.skipped}
    return [item for item in previous if item[0] not in fresh] + [list(item) for item in result.skipped]


def _probe(embedder: Embedder) -> list[float]:
    return [round(float(x), 6) for x in embedder.embed([PROBE])[0]]


def build_index(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
                store: str = "faiss", *, embedder: Embedder | None = None, settings: ChunkSettings | None = None,
                store_options: dict[str, Any] | None = None, progress: bool = True) -> Index:
    """Chunk and embed the documents under ``paths`` (folders or files) into a new index at ``out``.

    ``store``: ``faiss`` (default), ``qdrant`` or ``exact``; ``store_options`` go to its constructor
    (``url=`` for a Qdrant server, ``hnsw_from=`` for FAISS). Unreadable files are skipped and
    listed in ``Index.manifest["skipped"]``; finding nothing to index is an error."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    embedder = embedder or Embedder.load(DEFAULT_MODEL)
    settings = settings or ChunkSettings()
    if settings.max_tokens > embedder.room:
        raise ValueError(f"max_tokens={settings.max_tokens} is more than the embedder reads ({embedder.room})")
    root, files = list_files(paths)
    if not files:
        raise ValueError(f"no documents under {', '.join(map(str, paths))}: nothing with a suffix "
                         ".md, .markdown, .txt, .rst or .pdf; point at a folder that holds some")
    result = read_chunks(files, root, settings, embedder.count_tokens)
    if not result.chunks:
        listed = "; ".join(f"{name} ({why})" for name, why in result.skipped) or "the files hold no text"
        raise ValueError(f"nothing could be indexed under {root}: {listed}")
    manifest = {"format": FORMAT, "embedder": canonical_name(embedder.name), "dim": embedder.dim,
                "probe": _probe(embedder), "store": store, "chunking": asdict(settings), "root": str(root),
                "files": {}, "skipped": []}
    index = Index(embedder, make_store(store, embedder.dim, **(store_options or {})), {}, manifest)
    index.add_documents(files, progress=progress)
    index.save(out)
    return index


def open_index(path: str | os.PathLike[str], embedder: Embedder | None = None) -> Index:
    """The index saved at ``path``; ``embedder`` defaults to the one it was built with (and any
    other is refused when it is not that model)."""
    folder = current_version(path, what="index")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: index format {manifest.get('format')!r}, this glassformer reads {FORMAT}; rebuild it")
    built_with = manifest["embedder"]
    embedder = embedder or Embedder.load(built_with)
    _check_embedder(embedder, manifest, path)
    chunks = [Chunk.from_json(json.loads(line)) for line in
              (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines() if line]
    store = open_store_folder(folder / "store")
    return Index(embedder, store, {c.id: c for c in chunks}, manifest, Path(path))


def open_store_folder(folder: Path) -> VectorStore:
    """The store written directly into ``folder`` (inside an index version, not versioned itself)."""
    kind = json.loads((folder / "store.json").read_text(encoding="utf-8"))["kind"]
    return store_class(kind).read(folder)


def _check_embedder(embedder: Embedder, manifest: dict[str, Any], path: str | os.PathLike[str]) -> None:
    built_with, name = manifest["embedder"], canonical_name(embedder.name)
    rebuild = f"rebuild the index with this embedder (glassformer rag index ... ) or open it with {built_with}"
    if name != built_with or embedder.dim != manifest["dim"]:
        raise ValueError(f"{path} was built with the embedder {built_with} ({manifest['dim']} dimensions), "
                         f"not {name} ({embedder.dim}); its vectors mean nothing to another model: {rebuild}")
    similarity = float(np.dot(np.asarray(manifest["probe"], dtype=np.float32), embedder.embed([PROBE])[0]))
    if similarity < 0.999:
        raise ValueError(f"{path} was built with a model named {built_with}, but this embedder of that name gives "
                         f"other vectors (probe similarity {similarity:.3f}): different weights; {rebuild}")


__all__ = ["Bm25Retriever", "Hit", "Index", "build_index", "open_index"]
