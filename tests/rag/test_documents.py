"""Chunking: headings and paragraphs, token bounds, overlap, line and page ranges, skipped files."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from glassformer.rag.documents import (
    ChunkSettings,
    chunk_file,
    list_files,
    markdown_paragraphs,
    pack,
    read_chunks,
)


def word_count(text: str) -> int:
    return len(text.split())


MARKDOWN = """# Title

Intro paragraph one.
It wraps onto a second line.

Intro paragraph two.

## Section A

```python
x = 1

y = 2
```

Alpha text here.

### Deeper

Deep text.
"""


def test_paragraphs_keep_heading_trail_lines_and_code_fences() -> None:
    paragraphs = list(markdown_paragraphs(MARKDOWN))
    assert [(p.start, p.end, p.heading) for p in paragraphs] == [
        (3, 4, "Title"), (6, 6, "Title"), (10, 14, "Title > Section A"), (16, 16, "Title > Section A"),
        (20, 20, "Title > Section A > Deeper")]
    assert paragraphs[2].text.splitlines()[2] == ""  # the blank line inside the fence stayed


def test_chunks_cite_the_lines_they_hold_and_respect_the_budget(tmp_path: Path, embedder) -> None:
    lines = ["# Long document", ""]
    for n in range(60):  # 60 paragraphs of 2 lines each, under one heading
        lines += [f"Paragraph {n} says something about topic {n} in a few words.", f"And adds line two of {n}.", ""]
    path = tmp_path / "long.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    settings = ChunkSettings(max_tokens=64, overlap_tokens=30)
    chunks = chunk_file(path, "long.md", settings, embedder.count_tokens)
    assert len(chunks) > 5
    source = path.read_text(encoding="utf-8").splitlines()
    for chunk in chunks:
        assert embedder.count_tokens(chunk.embedding_text()) <= settings.max_tokens + 1  # +1: the newline joining heading
        held = [line for line in source[chunk.start - 1 : chunk.end] if line]
        assert [line for line in chunk.text.splitlines() if line] == held
        assert chunk.heading == "Long document"
    # overlap: each chunk after the first starts with the last paragraph of the one before
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start <= before.end


def test_a_line_longer_than_a_chunk_is_split_at_words() -> None:
    paragraphs = markdown_paragraphs("word " * 100)
    chunks = pack(paragraphs, "a.txt", ChunkSettings(max_tokens=30, overlap_tokens=0), word_count)
    assert len(chunks) == 4 and all(word_count(c.text) <= 30 for c in chunks)
    assert all((c.start, c.end) == (1, 1) for c in chunks)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        ChunkSettings(max_tokens=100, overlap_tokens=60)
    with pytest.raises(ValueError, match="max_tokens"):
        ChunkSettings(max_tokens=4)


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (so pypdf extracts it)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for text in pages:
        stream = zlib.compress(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
        page_number = len(objects) + 1
        kids.append(f"{page_number} 0 R")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {page_number + 1} 0 R "
                       f"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>")
        objects.append((f"<< /Length {len(stream)} /Filter /FlateDecode >>\nstream\n", stream, "\nendstream"))
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode()
        out += body[0].encode() + body[1] + body[2].encode() if isinstance(body, tuple) else body.encode()
        out += b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_chunks_cite_pages_and_a_broken_pdf_is_skipped_and_listed(tmp_path: Path) -> None:
    (tmp_path / "manual.pdf").write_bytes(make_pdf(["The red valve opens the pump.", "The blue lever stops it."]))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not a pdf at all")
    (tmp_path / "ok.md").write_text("# Ok\n\nFine text.\n", encoding="utf-8")
    root, files = list_files([tmp_path])
    result = read_chunks(files, root, ChunkSettings(), word_count)
    pdf = [c for c in result.chunks if c.file == "manual.pdf"]
    assert [(c.start, c.end, c.unit) for c in pdf] == [(1, 2, "page")]
    assert "red valve" in pdf[0].text and "blue lever" in pdf[0].text
    assert [name for name, _ in result.skipped] == ["broken.pdf"]
    assert result.files == ["manual.pdf", "ok.md"]


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_files([tmp_path / "nowhere"])
