"""Answers from retrieved chunks only, citing each chunk used by file and line range.

``answer(index, question)`` retrieves ``k`` chunks and hands those that clear the similarity
threshold to an answerer:

* ``extractive`` (default): the sentence of those chunks closest in meaning to the question (plus
  the next best when it is nearly as close). Cheap, and faithful by construction: every word of
  the answer is a word of the cited chunk.
* a chat model (``smollm2``, ``gemma3``, or a path to a GGUF file / model folder a generating
  family reads): the chunks go into the prompt numbered ``[1]..[k]`` with their file and lines,
  and the model is told to answer from them only and to cite them as ``[n]``; the citations of
  the answer are the chunks it cites.

"I don't know" when nothing relevant is retrieved: when the best chunk's cosine similarity to the
question is below ``threshold`` (default :data:`DEFAULT_THRESHOLD` = 0.3). With
all-MiniLM-L6-v2 a question and the passage that answers it score about 0.4-0.7 (on this
project's docs), while an unrelated question ("what is the capital of France?") reaches about 0.2
with its nearest chunk; 0.3 sits between. The threshold belongs to the embedder: another model
needs its own. A chat model may also say it does not know; then nothing is cited.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from glassformer.rag.documents import Chunk
from glassformer.rag.index import Hit, Index
from glassformer.utils.suggest import did_you_mean

DEFAULT_THRESHOLD = 0.3
I_DONT_KNOW = "I don't know: nothing in the indexed documents answers that."
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[*])")
ITEM_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|\||#)")
CITE_MARK = re.compile(r"\[(\d+)\]")
# answerer name -> the GPT family's name for its chat model (``models.gpt.gguf.default_chat_model``)
CHAT_MODELS: dict[str, str] = {"smollm2": "smollm2-135m", "gemma3": "gemma3-270m"}
CHAT_LOADER = "glassformer.models.gpt.gguf:default_chat_model"
ANSWERERS = ("extractive", *CHAT_MODELS)
Citation = tuple[str, int, int]


@dataclass
class Answer:
    """The answer text, the ``(file, line_start, line_end)`` of each chunk it rests on, the chunks
    retrieved (best first, whether used or not) and notes (a cut question, an uncited reply)."""

    text: str
    citations: list[Citation]
    chunks: list[Chunk]
    notes: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # cosine similarity of each retrieved chunk

    @property
    def known(self) -> bool:
        """Whether an answer was given (not "I don't know")."""
        return bool(self.citations)


class Answerer(Protocol):
    """Turns a question and the relevant retrieved hits into text and the indices of hits cited."""

    name: str

    def __call__(self, question: str, hits: Sequence[Hit]) -> tuple[str, list[int]]: ...


# -- extractive ---------------------------------------------------------------------------------


def sentences(chunk: Chunk) -> list[str]:
    """The sentences of a chunk: list items, table rows and headings stand alone; wrapped lines of
    a paragraph are joined before it is cut at sentence ends."""
    units: list[str] = []
    for paragraph in chunk.text.split("\n\n"):
        current: list[str] = []
        for line in paragraph.splitlines():
            if ITEM_START.match(line) and current:
                units.append(" ".join(current))
                current = []
            current.append(line.strip())
        if current:
            units.append(" ".join(current))
    out = [s.strip() for unit in units for s in SENTENCE_END.split(unit)]
    return [s for s in out if len(s.split()) >= 3 and not s.startswith("```")]


class ExtractiveAnswerer:
    """The best-matching sentence(s) of the retrieved chunks, scored with the index's embedder."""

    name = "extractive"
    SECOND_WITHIN = 0.05  # a second sentence joins when its similarity is this close to the best

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def __call__(self, question: str, hits: Sequence[Hit]) -> tuple[str, list[int]]:
        candidates = [(i, s) for i, hit in enumerate(hits) for s in sentences(hit.chunk)]
        if not candidates:
            return hits[0].chunk.text.strip(), [0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a cut question is already in the answer's notes
            vectors = self.embedder.embed([question, *(s for _, s in candidates)])
        scores = vectors[1:] @ vectors[0]
        order = np.argsort(-scores, kind="stable")
        chosen = [int(order[0])]
        if len(order) > 1 and scores[order[1]] >= scores[order[0]] - self.SECOND_WITHIN:
            chosen.append(int(order[1]))
        chosen.sort(key=lambda c: (candidates[c][0], c))  # in document order
        cited = sorted({candidates[c][0] for c in chosen})
        return " ".join(_plain(candidates[c][1]) for c in chosen), cited


def _plain(sentence: str) -> str:
    """A sentence without Markdown's list and table marks."""
    return re.sub(r"^\s*([-*+]|\d+[.)])\s+", "", sentence).strip(" |")


# -- chat models --------------------------------------------------------------------------------

SYSTEM = ("You answer questions about documents. Use only the numbered sources given. After each statement, "
          "cite the source it comes from as [1], [2] and so on. If the sources do not contain the answer, "
          "reply exactly: I don't know.")


def chat_prompt(question: str, hits: Sequence[Hit]) -> str:
    """The user turn: the numbered sources with their file and lines, then the question."""
    sources = "\n\n".join(f"[{n}] {h.chunk.file}, {'pages' if h.chunk.unit == 'page' else 'lines'} "
                          f"{h.chunk.start}-{h.chunk.end}:\n{h.chunk.embedding_text()}"
                          for n, h in enumerate(hits, start=1))
    return f"Sources:\n\n{sources}\n\nQuestion: {question}\nAnswer from the sources and cite them."


class ChatAnswerer:
    """A generating model with a chat template, answering greedily from the numbered chunks."""

    # a 135M model decoding greedily from a long prompt falls into loops; a mild penalty keeps it out
    REPETITION_PENALTY = 1.2

    def __init__(self, model: Any, tokenizer: Any, template: str | None, name: str, max_new_tokens: int = 160) -> None:
        self.model, self.tokenizer, self.template, self.name = model, tokenizer, template, name
        self.max_new_tokens = max_new_tokens

    def __call__(self, question: str, hits: Sequence[Hit]) -> tuple[str, list[int]]:
        from glassformer.generate import GenerationConfig
        from glassformer.generate.chat import ChatSession

        config = GenerationConfig(strategy="greedy", max_new_tokens=self.max_new_tokens,
                                  repetition_penalty=self.REPETITION_PENALTY)
        session = ChatSession(self.model, self.tokenizer, template=self.template, config=config, system=SYSTEM)
        text = "".join(session.reply(chat_prompt(question, hits))).strip()
        cited = sorted({int(n) - 1 for n in CITE_MARK.findall(text) if 1 <= int(n) <= len(hits)})
        return text, cited


@functools.lru_cache(maxsize=4)
def chat_answerer(name: str) -> ChatAnswerer:
    """A chat answerer by name (:data:`CHAT_MODELS`) or by path; loaded once per process."""
    from glassformer.generate.loading import load_checkpoint

    if name in CHAT_MODELS:
        from glassformer.registry import import_path

        load = import_path(CHAT_LOADER)
        # SmolLM2 is the loader's default: asking for it by default works with every version of it
        model, tokenizer, template, label = load() if name == "smollm2" else load(CHAT_MODELS[name])
        return ChatAnswerer(model, tokenizer, template, label)
    if not Path(name).expanduser().exists():
        raise ValueError(f"unknown answerer {name!r}{did_you_mean(name, ANSWERERS)}; choose one of "
                         f"{', '.join(ANSWERERS)}, or pass a path to a GGUF file or a chat model folder")
    checkpoint = load_checkpoint(name)
    if not checkpoint.chat_template:
        raise ValueError(f"{name}: the model has no chat template, so it cannot be prompted with sources; "
                         "use an instruction-tuned chat model")
    return ChatAnswerer(checkpoint.model, checkpoint.tokenizer, checkpoint.chat_template, checkpoint.name)


def get_answerer(answerer: str | Answerer, index: Index) -> Answerer:
    if not isinstance(answerer, str):
        return answerer
    if answerer == "extractive":
        return ExtractiveAnswerer(index.embedder)
    return chat_answerer(answerer)


# -- the entry point ----------------------------------------------------------------------------


def answer(index: Index, question: str, answerer: str | Answerer = "extractive", k: int = 4,
           threshold: float = DEFAULT_THRESHOLD, rerank: bool = False) -> Answer:
    """Answer ``question`` from the ``k`` chunks of ``index`` closest to it, citing those used.

    ``answerer``: ``"extractive"``, a chat model name (``"smollm2"``, ``"gemma3"``), a path to a chat
    model, or any :class:`Answerer`. Chunks scoring below ``threshold`` (cosine) are not given to
    it; when none is left the answer is "I don't know" with no citations."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} is a cosine similarity: it lies in [-1, 1] (default {DEFAULT_THRESHOLD})")
    note = index.question_note(question) if isinstance(question, str) and question.strip() else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cut question is reported in notes instead
        hits = index.search(question, k=k, rerank=rerank)
    notes = [note] if note else []
    chunks, scores = [h.chunk for h in hits], [h.score for h in hits]
    relevant = [h for h in hits if h.score >= threshold]
    if not relevant:
        best = f"{hits[0].score:.2f}" if hits else "no chunk"
        notes.append(f"the closest chunk scores {best}, below the threshold {threshold}")
        return Answer(I_DONT_KNOW, [], chunks, notes, scores)
    text, cited = get_answerer(answerer, index)(question, relevant)
    if not cited and not _declines(text):
        cited = list(range(len(relevant)))
        notes.append("the answerer cited no source; every chunk it was given is listed")
    return Answer(text, [relevant[i].chunk.citation for i in cited], chunks, notes, scores)


def _declines(text: str) -> bool:
    return text.lower().lstrip().startswith(("i don't know", "i do not know"))


__all__ = ["ANSWERERS", "Answer", "Answerer", "ChatAnswerer", "DEFAULT_THRESHOLD", "ExtractiveAnswerer", "answer"]
