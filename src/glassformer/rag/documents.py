"""Documents to chunks: Markdown, plain text and PDF, cut at headings and paragraphs.

A chunk is what the retriever returns and the answer cites, so it must be small enough for the
embedder to read whole (MiniLM reads 256 word pieces; a longer chunk would be cut silently and its
end never searched) and must remember where it came from: the file (relative to the indexed
folder) and the line range, or for a PDF the page range, since PDF text has no stable lines.

Cutting at headings keeps one topic per chunk; inside a section, paragraphs are packed until the
token budget is reached, and the last paragraph of a chunk is repeated at the start of the next
(when it fits the overlap budget), so an answer that straddles two paragraphs is found whole in
at least one chunk. A paragraph too long for one chunk is split at lines, and a line too long at
words. Each chunk carries the heading trail of its section (``Install > From source``) because a
paragraph often only makes sense under its heading; the trail is embedded with the text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst")
PDF_SUFFIXES = (".pdf",)
SUFFIXES = TEXT_SUFFIXES + PDF_SUFFIXES
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")

Unit = Literal["line", "page"]
TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text, its heading trail and where it lies (1-based, inclusive)."""

    id: str
    file: str  # relative to the indexed folder, with forward slashes
    start: int  # first line (or page, for a PDF)
    end: int  # last line (or page)
    text: str
    heading: str = ""
    unit: Unit = "line"

    @property
    def citation(self) -> tuple[str, int, int]:
        """``(file, line_start, line_end)``: what an answer cites (pages, for a PDF)."""
        return (self.file, self.start, self.end)

    @property
    def line_start(self) -> int:
        return self.start

    @property
    def line_end(self) -> int:
        return self.end

    def embedding_text(self) -> str:
        """What the embedder reads: the heading trail, then the text."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chunk:
        return cls(**data)


@dataclass
class Paragraph:
    """Consecutive non-blank lines: ``lines[i]`` is at position ``start + i`` of the source."""

    start: int
    lines: list[str]
    heading: str
    end: int = -1  # last position; -1: one line per position (``start + len(lines) - 1``)

    def __post_init__(self) -> None:
        if self.end < 0:
            self.end = self.start + len(self.lines) - 1

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class ReadResult:
    """The chunks of the files that could be read, and ``(file, reason)`` for those skipped."""

    chunks: list[Chunk]
    skipped: list[tuple[str, str]]
    files: list[str]


# -- parsing ------------------------------------------------------------------------------------


def markdown_paragraphs(text: str) -> Iterator[Paragraph]:
    """Paragraphs of Markdown (or plain text) with their heading trail; a code fence stays whole
    inside one paragraph (a blank line in a code block does not end it)."""
    trail: list[str] = []
    block: list[str] = []
    block_start = 0
    in_fence = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else HEADING.match(line)
        if heading or (not in_fence and not line.strip()):
            if block:
                yield Paragraph(block_start, block, " > ".join(trail))
                block = []
            if heading:
                level = len(heading.group(1))
                trail = [*trail[: level - 1], heading.group(2)]
            continue
        if not block:
            block_start = number
        block.append(line)
    if block:
        yield Paragraph(block_start, block, " > ".join(trail))


def pdf_paragraphs(path: Path) -> Iterator[Paragraph]:
    """One paragraph per blank-line block of each page's text; positions are page numbers."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    for page_number, page in enumerate(reader.pages, start=1):
        text = page.extract_text() or ""
        for paragraph in markdown_paragraphs(text):
            yield Paragraph(page_number, paragraph.lines, paragraph.heading, end=page_number)


# -- packing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkSettings:
    """Token budgets, counted with the embedder's own tokenizer: a chunk's heading and text
    together stay within ``max_tokens``; up to ``overlap_tokens`` of the previous chunk's last
    paragraph are repeated."""

    max_tokens: int = 200
    overlap_tokens: int = 50

    def __post_init__(self) -> None:
        if self.max_tokens < 16:
            raise ValueError(f"max_tokens={self.max_tokens}: a chunk needs at least 16 tokens to say anything")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(f"overlap_tokens={self.overlap_tokens} must be in [0, max_tokens/2 = {self.max_tokens // 2})")


def _split_long(paragraph: Paragraph, budget: int, count: TokenCounter, per_line: bool) -> list[Paragraph]:
    """Cut a paragraph over ``budget`` tokens at lines, and a line over it at words.

    ``per_line``: the paragraph's lines share one position (a PDF page), so pieces keep it."""
    pieces: list[Paragraph] = []
    for offset, line in enumerate(paragraph.lines):
        position = paragraph.start if per_line else paragraph.start + offset
        words, current = line.split(), []
        for word in words:
            if current and count(" ".join([*current, word])) > budget:
                pieces.append(Paragraph(position, [" ".join(current)], paragraph.heading, end=position))
                current = []
            current.append(word)
        if current:
            pieces.append(Paragraph(position, [" ".join(current)], paragraph.heading, end=position))
    merged: list[Paragraph] = []  # lines back together while they fit, to avoid one-line chunks
    for piece in pieces:
        last = merged[-1] if merged else None
        joinable = last is not None and (per_line or piece.start <= last.end + 1)
        if last is not None and joinable and count(last.text + "\n" + piece.text) <= budget:
            merged[-1] = Paragraph(last.start, [*last.lines, *piece.lines], last.heading, end=piece.end)
        else:
            merged.append(piece)
    return merged


def pack(paragraphs: Iterable[Paragraph], file: str, settings: ChunkSettings, count: TokenCounter,
         unit: Unit = "line") -> list[Chunk]:
    """Group paragraphs into chunks of one section each, within the token budget, with overlap."""
    chunks: list[Chunk] = []
    group: list[Paragraph] = []

    def close() -> None:
        if group:
            text = "\n\n".join(p.text for p in group)
            ident = f"{file}:{group[0].start}-{group[-1].end}:{len(chunks)}"
            chunks.append(Chunk(ident, file, group[0].start, max(p.end for p in group), text, group[0].heading, unit))

    for paragraph in paragraphs:
        budget = settings.max_tokens - count(paragraph.heading)
        pieces = [paragraph] if count(paragraph.text) <= budget else _split_long(paragraph, budget, count, unit == "page")
        for piece in pieces:
            if group and (piece.heading != group[0].heading or count("\n\n".join([*(p.text for p in group), piece.text])) > budget):
                close()
                tail = group[-1]
                same_section = tail.heading == piece.heading
                fits = count(tail.text) <= settings.overlap_tokens and count(tail.text + "\n\n" + piece.text) <= budget
                group = [tail] if same_section and fits and len(group) > 1 else []
            group.append(piece)
    close()
    return chunks


# -- files --------------------------------------------------------------------------------------


def list_files(paths: Iterable[str | Path]) -> tuple[Path, list[Path]]:
    """The common root folder and the readable files under ``paths`` (folders are walked)."""
    resolved = [Path(p).expanduser().resolve() for p in paths]
    if not resolved:
        raise ValueError("no documents given: pass a folder or files (.md, .txt, .pdf)")
    for path in resolved:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    files: list[Path] = []
    for path in resolved:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append(path)
    folders = [p if p.is_dir() else p.parent for p in resolved]
    root = Path(*Path(folders[0]).parts[: _common_depth(folders)])
    return root, sorted(set(files))


def _common_depth(folders: list[Path]) -> int:
    depth = 0
    for parts in zip(*(f.parts for f in folders), strict=False):
        if len(set(parts)) > 1:
            break
        depth += 1
    return depth


def relative_name(path: Path, root: Path) -> str:
    """``path`` as its citation shows it: relative to the indexed folder, forward slashes."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_chunks(files: Iterable[Path], root: Path, settings: ChunkSettings, count: TokenCounter) -> ReadResult:
    """Chunk every file; a file that cannot be read (a broken or encrypted PDF, undecodable text,
    an unknown suffix) is skipped and listed with the reason instead of stopping the whole index."""
    chunks: list[Chunk] = []
    skipped: list[tuple[str, str]] = []
    names: list[str] = []
    for path in files:
        name = relative_name(path, root)
        try:
            file_chunks = chunk_file(path, name, settings, count)
        except Exception as err:  # noqa: BLE001 - any reader failure skips the file, named
            skipped.append((name, f"{type(err).__name__}: {err}"))
            continue
        chunks += file_chunks
        names.append(name)
    return ReadResult(chunks, skipped, names)


def chunk_file(path: Path, name: str, settings: ChunkSettings, count: TokenCounter) -> list[Chunk]:
    """The chunks of one file, by its suffix."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        return pack(pdf_paragraphs(path), name, settings, count, unit="page")
    if suffix in TEXT_SUFFIXES:
        return pack(markdown_paragraphs(path.read_text(encoding="utf-8")), name, settings, count)
    raise ValueError(f"unsupported file type {suffix!r}; readable types are {', '.join(SUFFIXES)}")
