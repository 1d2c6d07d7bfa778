"""The docs site builds with warnings as errors, the repository paths its pages name exist, and
the RAG questions (``bench/rag_questions.jsonl``) still quote their pages.

MkDocs' strict mode catches what a reader would trip over inside the site: a broken link between
pages, a missing image, a page left out of the nav. It cannot see files outside ``docs/``, which
the chapters name as code spans (``lessons/01_attention.py``), so a path that moved or was never
there is checked here against the working tree.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The outline's chapters; each must point its reader at the code it describes.
CHAPTER_DIRS = ("blocks", "transformer", "families", "lifecycle", "frontier")
# A code span that names a file or folder of this repository, e.g. `src/glassformer/nn/attention.py`.
REPO_PATH = re.compile(r"`((?:src/glassformer|lessons|bench|tests)/[A-Za-z0-9_./-]*[A-Za-z0-9_])/?`")


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _repo_paths(page: Path) -> list[str]:
    return REPO_PATH.findall(page.read_text(encoding="utf-8"))


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed: run `make venv`")
def test_site_builds_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "blocks" / "attention" / "index.html").is_file()


def test_named_repository_paths_exist() -> None:
    missing = [f"{page.relative_to(ROOT)}: {path}" for page in _pages() for path in _repo_paths(page)
               if not (ROOT / path).exists()]
    assert not missing, "docs name files that do not exist (fix the path or the page):\n" + "\n".join(missing)


@pytest.mark.parametrize("folder", CHAPTER_DIRS)
def test_every_chapter_names_its_library_code(folder: str) -> None:
    pages = sorted((DOCS / folder).glob("*.md"))
    assert pages, f"docs/{folder}/ has no chapters"
    silent = [page.name for page in pages
              if not any(path.startswith("src/glassformer/") for path in _repo_paths(page))]
    assert not silent, f"chapters in docs/{folder}/ that name no module under src/glassformer/: {silent}"


QUESTIONS = ROOT / "bench" / "rag_questions.jsonl"


def _normalized(text: str) -> str:
    return " ".join(text.split())


def test_rag_questions_point_at_real_passages() -> None:
    """bench/rag.py scores a retrieved chunk as the answer when it holds the quote: every quote must exist."""
    rows = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 50
    assert len({row["id"] for row in rows}) == len(rows), "question ids repeat"
    stale = [f"{row['id']}: {page}: {row['quote']!r}" for row in rows for page in [row["file"], *row.get("also", [])]
             if not (DOCS / page).is_file()
             or _normalized(row["quote"]) not in _normalized((DOCS / page).read_text(encoding="utf-8"))]
    assert not stale, "questions whose quote is no longer in their page (update bench/rag_questions.jsonl):\n" + "\n".join(stale)
