"""CLIP's pictures: the similarity matrix shows the searched cosines, the rollout is the ViT's, sizes follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import glassformer.viz.clip as viz_clip
from glassformer.models.clip import retrieval
from glassformer.models.clip.retrieval import ClipCheckpoint
from glassformer.viz.clip import plot_query_rollouts, plot_retrieval_grid, plot_similarity_matrix
from glassformer.viz.vit import attention_rollout, vit_attentions

QUERIES = ["a red circle left of a star", "a small blue square"]


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[tuple[tuple, dict]]:
    """Record the arguments of ``glassformer.viz.clip.<name>`` and still draw."""
    calls: list[tuple[tuple, dict]] = []
    real = getattr(viz_clip, name)

    def spy(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(viz_clip, name, spy)
    return calls


def _pixels(n: int, size: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n)
    )


def test_the_similarity_picture_shows_the_cosines_of_the_search(
    ckpt: ClipCheckpoint, picture_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = retrieval.text_to_image(ckpt, picture_folder, QUERIES, k=3, progress=False)
    calls = _spy(monkeypatch, "plot_similarity_matrix")
    path = retrieval.save_similarity(ckpt, result, tmp_path / "sim.png")
    (scores, pictures, captions, _), _ = calls[0]
    found = list(dict.fromkeys(m.index for row in result.matches for m in row))  # every image a query found
    expected = torch.stack(
        [torch.stack([result.images.features[i] @ q for q in result.query_features]) for i in found]
    )
    torch.testing.assert_close(torch.as_tensor(scores), expected)
    assert captions == QUERIES and len(pictures) == len(found)
    for picture, i in zip(
        pictures, found, strict=True
    ):  # true-colour thumbnails of those files, not model inputs
        assert torch.equal(picture, retrieval.read_picture(result.images.paths[i], ckpt.image_size))
    assert Image.open(path).size[1] > 200


def test_image_to_text_pictures_show_every_line_that_fits(
    ckpt: ClipCheckpoint, picture_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = sorted(picture_folder.glob("*.png"))[:2]
    result = retrieval.image_to_text(ckpt, images, QUERIES, k=1)
    calls = _spy(monkeypatch, "plot_similarity_matrix")
    retrieval.save_similarity(ckpt, result, tmp_path / "sim.png")
    (scores, _, captions, _), _ = calls[0]
    assert captions == QUERIES  # all lines, not only each image's best one
    torch.testing.assert_close(torch.as_tensor(scores), result.image_features @ result.text_features.T)
    assert retrieval.save_rollout(ckpt, result, tmp_path / "rollout.png").is_file()


def test_the_rollout_is_the_image_tower_s_vit_rollout(
    ckpt: ClipCheckpoint, picture_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = retrieval.text_to_image(ckpt, picture_folder, QUERIES, k=3, progress=False)
    calls = _spy(monkeypatch, "attention_rollout")
    path = retrieval.save_rollout(ckpt, result, tmp_path / "rollout.png")
    (attentions,), _ = calls[0]
    top = torch.stack([retrieval.read_picture(m.item, ckpt.image_size) for m in result.matches[0]])
    expected, _ = vit_attentions(ckpt.model.vision, ckpt.pixels(top))  # the first query's top pictures
    vision = ckpt.model.config.vision
    assert len(attentions) == vision.n_layers and attentions[0].shape == (3, vision.n_heads, 17, 17)
    for got, want in zip(attentions, expected, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(attention_rollout(attentions)[:, 0].sum(-1), torch.ones(3))
    assert Image.open(path).size[0] > 300


def test_grid_size_follows_queries_and_k(tmp_path: Path) -> None:
    pictures = _pixels(4)
    one = plot_retrieval_grid(
        [("a query", [(p, f"{i}") for i, p in enumerate(pictures[:2])])], tmp_path / "a.png"
    )
    rows = [("first", [(p, "x") for p in pictures]), ("second", [(p, "y") for p in pictures[:1]])]
    two = plot_retrieval_grid(rows, tmp_path / "b.png", title="two queries")
    (w1, h1), (w2, h2) = Image.open(one).size, Image.open(two).size
    assert w2 > w1 and h2 > h1  # four columns and two rows against two columns and one row
    with pytest.raises(ValueError, match="at least one query, each with at least one picture"):
        plot_retrieval_grid([("nothing found", [])], tmp_path / "c.png")


def test_similarity_picture_checks_its_shapes_and_draws_gray_pictures(tmp_path: Path) -> None:
    scores = np.linspace(-0.2, 0.4, 6).reshape(3, 2)
    gray = _pixels(3)[:, :1]  # (3, 1, 32, 32): drawn as gray, in three equal channels
    assert plot_similarity_matrix(scores, gray, ["one", "two"], tmp_path / "s.png").is_file()
    with pytest.raises(ValueError, match="one row per picture \\(3\\) and one column per caption \\(3\\)"):
        plot_similarity_matrix(scores, gray, ["one", "two", "three"], tmp_path / "t.png")
    np.testing.assert_allclose(viz_clip._picture(gray[0])[..., 2], gray[0, 0].numpy() / 255.0)


def test_rollout_picture_checks_its_inputs(ckpt: ClipCheckpoint, tmp_path: Path) -> None:
    pictures = _pixels(2)
    with pytest.raises(ValueError, match="2 inputs, 2 pictures and 1 labels"):
        plot_query_rollouts(ckpt.model.vision, ckpt.pixels(pictures), pictures, ["one"], tmp_path / "r.png")
