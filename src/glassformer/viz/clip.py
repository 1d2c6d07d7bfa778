"""Pictures of CLIP retrieval: a top-k grid, the images x captions similarity matrix, and where the
image tower looks (attention rollout) in the pictures a query found.

Pictures are drawn in their true colours from the uint8 files (a model input stretched channel by
channel would turn a red circle white, and the captions are about colours). The rollout is the
ViT's (:func:`glassformer.viz.vit.attention_rollout`): CLIP's image tower is a ViT whose [CLS]
state becomes the image's embedding, so the [CLS] row of the rollout says which patches that
embedding, and thus the match, is made of.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor, nn

from glassformer.viz.figures import pyplot, save_figure
from glassformer.viz.vit import (
    _overlay,
    _prefix_tokens,
    attention_rollout,
    rollout_cls_map,
    upsample_map,
    vit_attentions,
)


def _picture(image: Tensor) -> np.ndarray:
    """uint8 ``(C, H, W)`` -> what ``imshow`` draws in true colour: ``(H, W, 3)`` in [0, 1]."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"a picture is (1 or 3 channels, H, W) uint8, got shape {tuple(image.shape)}")
    return image.expand(3, -1, -1).permute(1, 2, 0).float().numpy() / 255.0


def plot_retrieval_grid(
    rows: Sequence[tuple[str, Sequence[tuple[Tensor, str]]]],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """One row per query: its text above, then its pictures best first, each with its label under it
    (e.g. rank, cosine and file name). ``rows``: ``(query, [(uint8 (C, H, W) picture, label), ...])``."""
    if not rows or not all(found for _, found in rows):
        raise ValueError("plot_retrieval_grid needs at least one query, each with at least one picture")
    cols = max(len(found) for _, found in rows)
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.7 * cols, 2.3 * len(rows) + 0.3), squeeze=False)
    fig.subplots_adjust(hspace=0.6, wspace=0.08)
    for ax in axes.flat:
        ax.axis("off")
    for r, (query, found) in enumerate(rows):
        axes[r, 0].set_title(textwrap.shorten(f"“{query}”", width=18 * cols), loc="left", fontsize=9, pad=8,
                             fontweight="bold")  # fmt: skip
        for c, (image, label) in enumerate(found):
            axes[r, c].imshow(_picture(image), interpolation="nearest")
            axes[r, c].text(
                0.5, -0.04, label, transform=axes[r, c].transAxes, ha="center", va="top", fontsize=7
            )
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, tight=True)


def plot_similarity_matrix(
    scores: Tensor | np.ndarray,
    pictures: Tensor | Sequence[Tensor],
    captions: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """The images x captions cosine matrix as a heatmap, each row led by its picture and each
    column headed by its caption; every image's best caption is outlined (image -> text's answer)."""
    s = np.asarray(scores, dtype=np.float64)
    n, m = s.shape if s.ndim == 2 else (0, 0)
    if s.ndim != 2 or n != len(pictures) or m != len(captions) or not n or not m:
        raise ValueError(f"scores of shape {s.shape} need one row per picture ({len(pictures)}) and one column "
                         f"per caption ({len(captions)}), at least one of each")  # fmt: skip
    plt = pyplot()
    cell = 0.75
    fig = plt.figure(figsize=(cell * (m + 1) + 0.6, cell * n + 1.6))
    grid = fig.add_gridspec(n, 2, width_ratios=[1, m], wspace=0.02, hspace=0.0)
    for i, image in enumerate(pictures):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(_picture(image), interpolation="nearest")
        ax.axis("off")
    heat = fig.add_subplot(grid[:, 1])
    heat.imshow(s, cmap="viridis", aspect="auto")  # colours span the values shown: trained cosines are close
    middle = (s.max() + s.min()) / 2
    for i, j in np.ndindex(n, m):
        heat.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=7,
                  color="black" if s[i, j] > middle else "white")  # fmt: skip
    for i, j in enumerate(s.argmax(axis=1)):
        heat.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.5))
    heat.set_yticks([])
    heat.set_xticks(range(m), ["\n".join(textwrap.wrap(c, 16)) for c in captions], fontsize=6, rotation=60,
                    ha="left", rotation_mode="anchor")  # fmt: skip
    heat.xaxis.tick_top()
    fig.suptitle(
        title or "cosine similarity: images x captions (red: each image's best caption)", fontsize=9, y=0.02
    )
    return save_figure(fig, path, tight=True)


def plot_query_rollouts(
    vision: nn.Module,
    pixel_values: Tensor,
    pictures: Tensor | Sequence[Tensor],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """The pictures a query found (``pictures``, uint8) over their attention rollouts in the image
    tower ``vision`` (run on ``pixel_values``, the same pictures as the model's input)."""
    if not len(pictures) == len(labels) == pixel_values.shape[0] or not len(labels):
        raise ValueError(f"{pixel_values.shape[0]} inputs, {len(pictures)} pictures and {len(labels)} labels: "
                         "give one of each per picture, at least one")  # fmt: skip
    attentions, _ = vit_attentions(vision, pixel_values)
    maps = rollout_cls_map(attention_rollout(attentions), n_prefix=_prefix_tokens(vision))  # (N, g, g)
    cols = min(len(labels), 8)
    rows = math.ceil(len(labels) / cols)
    plt = pyplot()
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.8 * cols, 3.9 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, label) in enumerate(zip(pictures, labels, strict=True)):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        shown = _picture(image)
        top.imshow(shown, interpolation="nearest")
        top.set_title(label, fontsize=7)
        _overlay(bottom, shown, upsample_map(maps[i], shown.shape[:2]), "attention rollout")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, tight=True)
