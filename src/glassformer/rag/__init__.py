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
