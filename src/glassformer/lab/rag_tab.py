"""RAG: ask a question of an index of documents; the answer cites the file and lines it used.

A thin layer over ``glassformer.rag``: ``open_index(path)`` and
``answer(index, question, answerer=..., k=...)``, whose ``Answer`` has the text, the citations
``(file, line_start, line_end)`` and the retrieved chunks. Indexes come from the lab's server-side
list (``glassformer lab --index PATH``); until ``glassformer.rag`` is installed the tab says so.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glassformer.lab.context import LabContext
from glassformer.lab.limits import LabInputError

TITLE = "RAG"
ANSWERERS = ("extractive", "smollm2")
MAX_K = 10


def unavailable() -> str | None:
    """Why the tab cannot work here (``glassformer.rag`` missing), or None when it can."""
    try:
        from glassformer.rag import answer, open_index  # noqa: F401 - only checking that they exist
    except ImportError as err:
        return f"the RAG tab needs glassformer.rag (open_index, answer), which is not available here: {err}"
    return None


class Indexes:
    """The operator's indexes by name, each opened on first use and shared by every session."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = dict(paths)
        self._open: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        if name not in self.paths:
            raise LabInputError(f"no index named {name!r}; pick one of: {', '.join(self.paths) or '(none listed)'}")
        with self._lock:
            if name not in self._open:
                from glassformer.rag import open_index

                self._open[name] = open_index(self.paths[name])
            return self._open[name]


def ask(ctx: LabContext, indexes: Indexes, index_name: str, question: str, answerer: str, k: float) -> tuple[str, list[list[object]]]:
    """The answer as Markdown, and one row ``[file, lines, text]`` per retrieved chunk."""
    from glassformer.rag import answer

    question = ctx.limits.text(question, "question")
    if answerer not in ANSWERERS:
        raise LabInputError(f"answerer {answerer!r}: pick one of {', '.join(ANSWERERS)}")
    k = int(k)
    if not 1 <= k <= MAX_K:
        raise LabInputError(f"k={k}: retrieve from 1 to {MAX_K} chunks")
    result = answer(indexes.get(index_name), question, answerer=answerer, k=k)
    cites = "\n".join(f"- `{f}` lines {a}-{b}" for f, a, b in result.citations) or "- (none)"
    rows = [[_field(c, "file"), f"{_field(c, 'line_start')}-{_field(c, 'line_end')}", _field(c, "text")]
            for c in result.chunks]
    return f"{result.text}\n\n**Citations**\n{cites}", rows


def _field(chunk: Any, name: str) -> object:
    return chunk.get(name, "") if isinstance(chunk, dict) else getattr(chunk, name, "")


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    reason = unavailable()
    if reason is not None:
        gr.Markdown(f"**RAG is not available yet.** {reason}", elem_id="rag-missing")
        return
    indexes = Indexes(ctx.indexes)
    if not indexes.paths:
        gr.Markdown("No index is listed. Build one with `glassformer rag index DIR --out INDEX` and start "
                    "the lab with `--index INDEX`.", elem_id="rag-missing")
        return
    names = list(indexes.paths)
    with gr.Row():
        index = gr.Dropdown(names, value=names[0], label="Index", elem_id="rag-index")
        answerer = gr.Radio(list(ANSWERERS), value="extractive", label="Answerer", elem_id="rag-answerer")
        k = gr.Slider(1, MAX_K, value=4, step=1, label="Chunks to retrieve (k)")
    question = gr.Textbox(label="Question", max_length=ctx.limits.max_chars, elem_id="rag-question")
    run = gr.Button("Ask", variant="primary", elem_id="rag-run")
    result = gr.Markdown(elem_id="rag-answer")
    chunks = gr.Dataframe(headers=["file", "lines", "text"], label="Retrieved chunks", elem_id="rag-chunks")
    run.click(error_boundary(lambda i, q, a, n: ask(ctx, indexes, i, q, a, n)), [index, question, answerer, k],
              [result, chunks], concurrency_id="models")
