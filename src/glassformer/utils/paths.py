"""Where glassformer finds shared data sets (``GLASSFORMER_DATA``) and keeps its caches (``GLASSFORMER_CACHE``)."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path | None:
    """The data folder: ``$GLASSFORMER_DATA``, else ``../shared/data`` when it exists, else None.

    Data sets are always read in place, never copied into the repository. ``../shared/data`` is
    looked up from the current directory and from the repository root.
    """
    env = os.environ.get("GLASSFORMER_DATA")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    repo_root = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo_root):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


def data_file(*parts: str) -> Path | None:
    """A file under the data root, or None when the root or the file is absent."""
    root = data_root()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None


def cache_root() -> Path:
    """glassformer's own cache (converted checkpoints, compiled kernels): ``$GLASSFORMER_CACHE``,
    else ``~/.cache/glassformer``."""
    return Path(os.environ.get("GLASSFORMER_CACHE", "~/.cache/glassformer")).expanduser()
