"""``glassformer tokenizer train|encode`` end to end on small files."""

from __future__ import annotations

from pathlib import Path

import pytest

from glassformer.cli import main
from glassformer.tokenizers import ByteLevelBPE, CharTokenizer, WordPiece, load_tokenizer


@pytest.fixture
def text_files(tmp_path: Path, corpus: str) -> list[str]:
    paths = []
    for i, part in enumerate((corpus[:40_000], corpus[40_000:80_000])):
        path = tmp_path / f"part{i}.txt"
        path.write_text(part, encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("kind, cls, size", [("bpe", ByteLevelBPE, 600), ("wordpiece", WordPiece, 600),
                                             ("char", CharTokenizer, None)])
def test_train_then_encode(tmp_path: Path, text_files: list[str], capsys: pytest.CaptureFixture[str],
                           kind: str, cls: type, size: int | None) -> None:
    out = tmp_path / kind
    args = ["tokenizer", "train", "--kind", kind, *text_files, "--out", str(out)]
    if size is not None:
        args += ["--vocab-size", str(size)]
    assert main(args) == 0
    tok = load_tokenizer(out)
    assert isinstance(tok, cls) and (size is None or tok.vocab_size == size)
    assert f"saved to {out}" in capsys.readouterr().out

    assert main(["tokenizer", "encode", str(out), "The statement"]) == 0
    shown = capsys.readouterr().out
    ids = tok.encode("The statement")
    assert f"{len(ids)} tokens" in shown and "ids: " + " ".join(map(str, ids)) in shown
    first = tok.id_to_token(ids[0])
    assert any(line.split()[:2] == [str(ids[0]), first] for line in shown.splitlines())


def test_encode_with_template_and_fast_backend(minilm_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenizer", "encode", str(minilm_folder), "Hello world", "--add-special-tokens",
                 "--backend", "fast"]) == 0
    assert "ids: 101 7592 2088 102" in capsys.readouterr().out


def test_train_needs_a_vocab_size(text_files: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenizer", "train", "--kind", "wordpiece", *text_files, "--out", str(tmp_path / "x")]) == 2
    assert "--vocab-size is required" in capsys.readouterr().err
