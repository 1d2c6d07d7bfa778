"""What every picture shares: matplotlib without a display, and writing the figure to a PNG."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend: files only, so it draws on a machine with no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` (its folder made), close it so a long run does not pile up figures,
    and return the path. ``tight`` crops the saved image to what is drawn."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    pyplot().close(fig)
    return path
