"""Retrieval-augmented answers over your own documents: chunk, embed, store, retrieve, answer.

    from glassformer.rag import build_index, open_index, answer
    index = build_index(["docs"], "out/docs-index", store="faiss")
    result = answer(open_index("out/docs-index"), "How do I export a model?", answerer="extractive")
    print(result.text, result.citations)      # [("hf-export.md", 12, 18), ...]

``documents`` cuts Markdown/text/PDF into cited chunks, ``embed`` turns them into MiniLM vectors
with our BERT, ``stores`` keeps them (exact, FAISS, Qdrant), ``index`` ties the three together
(with a BM25 baseline over the same chunks), ``answer`` answers from the retrieved chunks only.
"""

from __future__ import annotations

from glassformer.rag.answer import ANSWERERS, DEFAULT_THRESHOLD, Answer, answer
from glassformer.rag.documents import Chunk, ChunkSettings
from glassformer.rag.embed import Embedder
from glassformer.rag.index import Bm25Retriever, Hit, Index, build_index, open_index
from glassformer.rag.stores import ExactStore, FaissStore, QdrantStore, VectorStore, recall_vs_exact

__all__ = ["ANSWERERS", "DEFAULT_THRESHOLD", "Answer", "Bm25Retriever", "Chunk", "ChunkSettings", "Embedder",
           "ExactStore", "FaissStore", "Hit", "Index", "QdrantStore", "VectorStore", "answer", "build_index",
           "open_index", "recall_vs_exact"]
