"""What every lesson shares: its command line, printing, saving figures and checking numbers.

The lessons import this file from their own folder (``python lessons/01_attention.py`` puts
``lessons/`` on the module path), so each lesson stays a single readable script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to files; no window, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(number: str, doc: str | None) -> argparse.Namespace:
    """``--out DIR`` (default out/lessons/NN) and ``--quick`` (smaller experiments, for tests)."""
    first_line = (doc or "").strip().splitlines()[0] if doc else f"lesson {number}"
    parser = argparse.ArgumentParser(description=first_line)
    parser.add_argument("--out", type=Path, default=Path("out/lessons") / number, help="folder for the figures")
    parser.add_argument("--quick", action="store_true", help="smaller experiments (used by the tests)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def show(name: str, value, decimals: int = 3) -> None:
    """Print a tensor or array with its shape, rounded so that small examples fit on screen."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    print(f"{name}  shape {tuple(array.shape)}")
    with np.printoptions(precision=decimals, suppress=True, linewidth=110):
        print(array)


def check(what: str, ours, reference, atol: float = 1e-6) -> None:
    """Compare our hand computation with glassformer's (or a formula); stop the lesson if they differ."""
    a = ours.detach().double() if isinstance(ours, torch.Tensor) else torch.as_tensor(np.asarray(ours)).double()
    b = (
        reference.detach().double()
        if isinstance(reference, torch.Tensor)
        else torch.as_tensor(np.asarray(reference)).double()
    )
    if a.shape != b.shape:
        raise SystemExit(f"CHECK FAILED: {what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    if not diff <= atol:
        raise SystemExit(f"CHECK FAILED: {what}: max |difference| {diff:.3g} > {atol:g}")
    print(f"check ok: {what} (max |difference| {diff:.2g})")


def save(fig: plt.Figure, out: Path, name: str) -> Path:
    path = out / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path}")
    return path


def heatmap(ax: plt.Axes, matrix, rows: list[str], cols: list[str], title: str, cmap: str = "viridis",
            annotate: bool = True, **imshow) -> None:
    """One labelled heatmap; small matrices get their values written in the cells."""
    m = matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix)
    image = ax.imshow(m, cmap=cmap, **imshow)
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title)
    if annotate and m.size <= 100:
        finite = m[np.isfinite(m)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(m):
            if np.isneginf(v):
                ax.text(j, i, "-inf", ha="center", va="center", fontsize=7, color="gray")
            else:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < mid else "black")
    plt.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
