"""Attention pictures from real attention tensors of glassformer.nn.blocks.TransformerStack."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from glassformer.nn.blocks import TransformerStack
from glassformer.viz.attention import (
    DPI,
    MIN_CELL_INCHES,
    attention_array,
    heatmap_figure_size,
    plot_attention_heads,
    write_head_view_html,
)

TOKENS = ["The", "animal", "didn't", "cross", "</script>", "street", "because", "it", "was", "tired", "é"]
N_LAYERS, N_HEADS = 3, 4


@pytest.fixture(scope="module")
def attentions() -> list[torch.Tensor]:
    torch.manual_seed(0)
    stack = TransformerStack(N_LAYERS, 32, N_HEADS, backend="eager").eval()
    x = torch.randn(2, len(TOKENS), 32) * 2
    with torch.no_grad():
        out = stack(x, is_causal=True, return_weights=True)
    assert len(out.attentions) == N_LAYERS
    return out.attentions


def _embedded_json(page: str) -> dict:
    found = re.findall(r'<script type="application/json" id="attention-data">(.*?)</script>', page, re.S)
    assert len(found) == 1
    return json.loads(found[0])


def _png_size(path) -> tuple[int, int]:
    image = mpimg.imread(path)
    return image.shape[1], image.shape[0]  # (width, height) in pixels


@pytest.mark.parametrize(("layer", "rows"), [(None, N_LAYERS), (1, 1)])
def test_heatmap_grid_has_one_panel_per_layer_and_head(tmp_path, attentions, layer, rows):
    path = plot_attention_heads(attentions, TOKENS, tmp_path / "heads.png", layer=layer)
    width, height = heatmap_figure_size(rows, N_HEADS, TOKENS)
    got = _png_size(path)
    assert abs(got[0] - width * DPI) <= 1 and abs(got[1] - height * DPI) <= 1, (got, width, height)
    image = mpimg.imread(path)[..., :3]
    assert image.std() > 0.05  # panels were drawn, not a blank canvas


def test_grid_size_follows_layers_and_heads(tmp_path, attentions):
    """Each extra layer adds one row of panels and each extra head one column, all of equal size."""
    widths, heights = [], []
    for n in (1, 2, 3):
        subset = [a[:, :n] for a in attentions[:n]]  # n layers x n heads
        w, h = _png_size(plot_attention_heads(subset, TOKENS, tmp_path / f"grid{n}.png"))
        widths.append(w)
        heights.append(h)
    column, row = widths[1] - widths[0], heights[1] - heights[0]
    assert column > MIN_CELL_INCHES * DPI and row > MIN_CELL_INCHES * DPI
    assert abs((widths[2] - widths[1]) - column) <= 1 and abs((heights[2] - heights[1]) - row) <= 1


def test_head_view_embeds_every_layer_and_head(tmp_path, attentions):
    path = write_head_view_html(attentions, TOKENS, tmp_path / "view.html", batch_index=1)
    page = path.read_text(encoding="utf-8")
    data = _embedded_json(page)
    assert data["tokens"] == TOKENS
    assert (data["n_layers"], data["n_heads"]) == (N_LAYERS, N_HEADS)
    weights = np.array(data["attention"])
    assert weights.shape == (N_LAYERS, N_HEADS, len(TOKENS), len(TOKENS))
    expected = np.stack([a[1].numpy() for a in attentions])
    np.testing.assert_allclose(weights, expected, atol=1e-4)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-3)
    assert np.triu(weights, k=1).max() == 0  # the stack ran causally
    # Self-contained: no external scripts, styles or images; a token cannot close the script.
    assert not re.search(r"<(script|img|link)[^>]*\s(src|href)=", page)
    assert page.count("</script>") == 2
    for token in TOKENS:
        if token != "</script>":
            assert json.dumps(token, ensure_ascii=False) in page


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_head_view_script_is_valid_javascript(tmp_path, attentions):
    page = write_head_view_html(attentions, TOKENS, tmp_path / "view.html").read_text(encoding="utf-8")
    script = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert len(script) == 1
    js = tmp_path / "view.js"
    js.write_text(script[0], encoding="utf-8")
    subprocess.run(["node", "--check", str(js)], check=True, capture_output=True)


def test_bad_input_names_the_problem(tmp_path, attentions):
    with pytest.raises(ValueError, match="11 queries x 11 keys but 3 tokens"):
        plot_attention_heads(attentions, TOKENS[:3], tmp_path / "x.png")
    with pytest.raises(ValueError, match="layer=5 is out of range"):
        plot_attention_heads(attentions, TOKENS, tmp_path / "x.png", layer=5)
    with pytest.raises(ValueError, match=r"layer 0 has shape \(4, 11, 11\)"):
        attention_array([attentions[0][0]])
    with pytest.raises(ValueError, match="batch_index=2 is out of range"):
        write_head_view_html(attentions, TOKENS, tmp_path / "x.html", batch_index=2)
    with pytest.raises(ValueError, match="non-empty list"):
        attention_array([])
