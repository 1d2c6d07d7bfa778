"""Pictures of attention: per-head heatmap grids (PNG) and an interactive head view (HTML).

Both take attention in the *bertviz layout* that every glassformer model returns with
``return_weights=True``: a list with one tensor per layer, each ``(batch, heads, query, key)``,
plus the token strings. One batch row is drawn (``batch_index``).

* :func:`plot_attention_heads` draws a grid with one row per layer and one column per head; each
  panel is a ``query x key`` heatmap (row ``i`` = how token ``i`` spreads its attention).
* :func:`write_head_view_html` writes one self-contained HTML file (inline CSS and JS, no network)
  in the spirit of bertviz's head view: pick a layer, toggle heads, and hover a token to see the
  lines of attention leaving it (left column) or arriving at it (right column).
* :func:`write_kinds_head_view_html` writes the same view for several kinds of attention whose
  queries and keys may be different tokens (an encoder-decoder's encoder, decoder and cross
  attention, :class:`AttentionKind`), with a menu to switch between them.
* :func:`model_attention` runs any glassformer model on a text with its tokenizer and returns the
  two inputs of the functions above; ``glassformer attention`` (``viz/cli.py``) chains the three.
"""

from __future__ import annotations

import html
import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from glassformer.viz.figures import pyplot, save_figure

# Panel geometry. The figure size follows from these, so a picture's pixel size is predictable:
# see heatmap_figure_size().
DPI = 100
MIN_CELL_INCHES = 1.6
INCHES_PER_TOKEN = 0.22
MAX_CELL_INCHES = 6.0
PANEL_TITLE_INCHES = 0.3  # above each panel ("layer 2 head 5")
SUPTITLE_INCHES = 0.5
INCHES_PER_LABEL_CHAR = 0.075  # token labels at the tick font size
MAX_LABELLED_TOKENS = 48  # beyond this, tick labels would overlap; panels go unlabelled

# One colour per head in the HTML view (cycled when there are more heads).
HEAD_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#ad494a",
)


def attention_array(attentions: Sequence, n_tokens: int | None = None, batch_index: int = 0) -> np.ndarray:
    """Stack one batch row of per-layer attention into a float array ``(layers, heads, query, key)``.

    Accepts torch tensors or NumPy arrays. Raises a ``ValueError`` naming the layer and the shape
    when the input is not in the bertviz layout or does not fit ``n_tokens`` tokens.
    """
    if isinstance(attentions, np.ndarray) and attentions.ndim == 5:
        attentions = list(attentions)
    if not isinstance(attentions, Sequence) or len(attentions) == 0:
        raise ValueError("attentions must be a non-empty list with one (batch, heads, query, key) array per layer")
    layers = []
    for i, a in enumerate(attentions):
        arr = _to_numpy(a)
        if arr.ndim != 4:
            raise ValueError(f"attention of layer {i} has shape {arr.shape}; expected (batch, heads, query, key)")
        if not 0 <= batch_index < arr.shape[0]:
            raise ValueError(f"batch_index={batch_index} is out of range for a batch of {arr.shape[0]} (layer {i})")
        if layers and arr.shape[1:] != layers[0].shape:
            raise ValueError(
                f"layer {i} attention has shape {arr.shape[1:]} (heads, query, key) but layer 0 has {layers[0].shape}"
            )
        layers.append(arr[batch_index])
    out = np.stack(layers)  # (L, H, Tq, Tk)
    if n_tokens is not None and out.shape[2:] != (n_tokens, n_tokens):
        raise ValueError(
            f"attention covers {out.shape[2]} queries x {out.shape[3]} keys but {n_tokens} tokens were given; "
            "pass one token string per position"
        )
    if not np.isfinite(out).all():
        raise ValueError("attention weights contain NaN or infinite values")
    return out


def _to_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, possibly on an accelerator or in bfloat16
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def heatmap_figure_size(n_rows: int, n_cols: int, tokens: Sequence[str]) -> tuple[float, float]:
    """``(width, height)`` in inches of a grid of ``n_rows x n_cols`` heatmaps over ``tokens``.

    Panels grow with the token count; the left and bottom margins grow with the longest token,
    whose label runs along them.
    """
    n = len(tokens)
    cell = min(MAX_CELL_INCHES, max(MIN_CELL_INCHES, INCHES_PER_TOKEN * n))
    longest = max((len(str(t)) for t in tokens), default=1)
    label = min(2.5, 0.3 + INCHES_PER_LABEL_CHAR * longest) if n <= MAX_LABELLED_TOKENS else 0.2
    width = n_cols * (cell + 0.15) + label + 0.3
    height = n_rows * (cell + PANEL_TITLE_INCHES) + label + SUPTITLE_INCHES
    return width, height


def plot_attention_heads(
    attentions: Sequence,
    tokens: Sequence[str],
    path: str | os.PathLike[str],
    layer: int | None = None,
    *,
    batch_index: int = 0,
    title: str | None = None,
    head: int | None = None,
) -> Path:
    """Draw a ``layers x heads`` grid of attention heatmaps (only ``layer``, only ``head``, if given) to a PNG.

    Each panel has its own colour scale from 0 to its largest weight, so a head that spreads its
    attention thinly is still legible. Returns the path written.
    """
    plt = pyplot()

    tokens = [str(t) for t in tokens]
    weights = attention_array(attentions, len(tokens), batch_index)  # (L, H, T, T)
    n_layers, n_heads, t, _ = weights.shape
    if layer is not None and not 0 <= layer < n_layers:
        raise ValueError(f"layer={layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if head is not None and not 0 <= head < n_heads:
        raise ValueError(f"head={head} is out of range: each layer has {n_heads} heads (0..{n_heads - 1})")
    layers = [layer] if layer is not None else list(range(n_layers))
    heads = [head] if head is not None else list(range(n_heads))

    width, height = heatmap_figure_size(len(layers), len(heads), tokens)
    fig, axes = plt.subplots(
        len(layers), len(heads), figsize=(width, height), dpi=DPI, squeeze=False, layout="constrained"
    )
    labelled = t <= MAX_LABELLED_TOKENS
    fontsize = max(4.0, min(9.0, 160.0 / max(t, 1)))
    for r, li in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r][c]
            panel = weights[li, h]
            ax.imshow(panel, cmap="viridis", vmin=0.0, vmax=max(float(panel.max()), 1e-12), interpolation="nearest")
            ax.set_title(f"layer {li} head {h}", fontsize=8)
            ax.set_xticks(range(t) if labelled else [])
            ax.set_yticks(range(t) if labelled else [])
            if labelled and r == len(layers) - 1:
                ax.set_xticklabels(tokens, rotation=90, fontsize=fontsize)
            else:
                ax.set_xticklabels([])
            if labelled and c == 0:
                ax.set_yticklabels(tokens, fontsize=fontsize)
            else:
                ax.set_yticklabels([])
            ax.tick_params(length=0)
    fig.suptitle(title or "attention: rows = queries (attending), columns = keys (attended to)", fontsize=10)
    return save_figure(fig, path, dpi=DPI)


def head_view_data(
    attentions: Sequence, tokens: Sequence[str], *, batch_index: int = 0, decimals: int = 4
) -> dict:
    """The JSON the HTML view embeds: tokens and ``attention[layer][head][query][key]``, rounded."""
    tokens = [str(t) for t in tokens]
    weights = attention_array(attentions, len(tokens), batch_index)
    return {
        "tokens": tokens,
        "n_layers": int(weights.shape[0]),
        "n_heads": int(weights.shape[1]),
        "attention": np.round(weights, decimals).tolist(),
    }


def write_head_view_html(
    attentions: Sequence,
    tokens: Sequence[str],
    path: str | os.PathLike[str],
    *,
    batch_index: int = 0,
    title: str = "glassformer head view",
) -> Path:
    """Write an interactive, self-contained head view (one HTML file, works offline)."""
    return _write_page(head_view_data(attentions, tokens, batch_index=batch_index), path, title)


@dataclass(frozen=True)
class AttentionKind:
    """One kind of attention in a head view: its ``name`` (the menu entry), ``weights`` per layer in
    the bertviz layout, the token of each query row (``queries``) and of each key column (``keys``).

    Self-attention has the same tokens on both sides; cross-attention has the target as queries and
    the source as keys, which is why the two lists are separate.
    """

    name: str
    weights: Sequence
    queries: Sequence[str]
    keys: Sequence[str]


def kind_view_data(kind: AttentionKind, *, batch_index: int = 0, decimals: int = 4) -> dict:
    """One entry of the multi-kind view's JSON: the kind's name, tokens and rounded weights."""
    weights = attention_array(kind.weights, batch_index=batch_index)  # (L, H, Tq, Tk)
    queries, keys = [str(t) for t in kind.queries], [str(t) for t in kind.keys]
    if weights.shape[2:] != (len(queries), len(keys)):
        raise ValueError(
            f"{kind.name} attention covers {weights.shape[2]} queries x {weights.shape[3]} keys but "
            f"{len(queries)} query and {len(keys)} key tokens were given; pass one token string per position"
        )
    return {
        "name": kind.name,
        "queries": queries,
        "keys": keys,
        "n_layers": int(weights.shape[0]),
        "n_heads": int(weights.shape[1]),
        "attention": np.round(weights, decimals).tolist(),
    }


def write_kinds_head_view_html(
    kinds: Sequence[AttentionKind],
    path: str | os.PathLike[str],
    *,
    batch_index: int = 0,
    title: str = "glassformer head view",
) -> Path:
    """Write one self-contained head view holding several kinds of attention (a menu picks the kind).

    For an encoder-decoder: the encoder's self-attention, the decoder's causal self-attention and
    the cross-attention from target tokens (left) to source tokens (right).
    """
    if not kinds:
        raise ValueError("kinds is empty: give at least one AttentionKind to draw")
    names = [k.name for k in kinds]
    if len(set(names)) != len(names):
        raise ValueError(f"attention kinds need distinct names for the menu, got {names}")
    views = [kind_view_data(k, batch_index=batch_index) for k in kinds]
    return _write_page({"views": views}, path, title)


def _write_page(data: dict, path: str | os.PathLike[str], title: str) -> Path:
    """The head view page around ``data`` (one view's fields, or ``{"views": [...]}``)."""
    data = {**data, "colors": list(HEAD_COLORS)}
    # "<" is escaped so that no token (e.g. "</script>") can end the script element; JSON reads
    # the \u003c escape back as "<".
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = (
        _TEMPLATE.replace("%%TITLE%%", html.escape(title))
        .replace("%%CSS%%", _CSS)
        .replace("%%JS%%", _JS)
        .replace("%%DATA%%", payload)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


class TokenizerLike(Protocol):
    """What the attention explainer needs from a tokenizer: text to ids, and ids back to text.

    A token's display string comes from ``id_to_token`` when the tokenizer has one and knows the id
    (``"##ing"``, ``"[CLS]"``, ``"Ġthe"``: what the model really sees), else from ``decode([id])``. ``encode`` may
    return a list of ids or an object with an ``ids`` attribute.
    """

    def encode(self, text: str) -> Any: ...

    def decode(self, ids: list[int]) -> str: ...


def encode_text(tokenizer: TokenizerLike, text: str) -> list[int]:
    """Token ids of ``text`` with the tokenizer's default special tokens (``[CLS]``/``[SEP]`` for BERT)."""
    if not text.strip():
        raise ValueError("the text to explain is empty; give at least one word")
    # glassformer tokenizers add the model's framing ([CLS] ... [SEP]) only when asked
    if "add_special_tokens" in inspect.signature(tokenizer.encode).parameters:
        encoded = tokenizer.encode(text, add_special_tokens=True)
    else:
        encoded = tokenizer.encode(text)
    ids = list(getattr(encoded, "ids", encoded))
    if not ids:
        raise ValueError(f"the tokenizer produced no tokens for {text!r}")
    return [int(i) for i in ids]


def token_strings(tokenizer: TokenizerLike, ids: Sequence[int]) -> list[str]:
    """One printable label per id (newlines and tabs shown as escapes)."""
    to_token = getattr(tokenizer, "id_to_token", None)
    labels = []
    for i in ids:
        label = to_token(i) if to_token is not None else None
        labels.append(tokenizer.decode([i]) if label is None else readable_token(label))
    return [str(t).replace("\n", "\\n").replace("\t", "\\t") for t in labels]


def readable_token(token: str) -> str:
    """A byte-level BPE token with its non-ASCII letters shown as text (``ĠMÃ¤dchen`` -> ``ĠMädchen``);
    ASCII tokens, tokens of other vocabularies and incomplete UTF-8 characters are kept as they are."""
    from glassformer.tokenizers.pretokenize import token_to_bytes

    raw = token_to_bytes(token)
    if raw is None or raw.isascii():
        return token
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return token  # a piece of a character: its byte spelling is all there is to show
    return text.replace(" ", "Ġ")


def model_attention(model, tokenizer: TokenizerLike, text: str) -> tuple[list, list[str]]:
    """Run ``model`` on ``text`` and return ``(attentions per layer (1, H, T, T), token strings)``.

    Family-agnostic: any glassformer model whose forward takes ``input_ids=`` and
    ``return_weights=True`` and returns a ``ModelOutput`` with ``attentions``. An all-ones
    ``attention_mask`` is passed when the forward accepts one (encoders expect it).
    """
    import torch

    ids = encode_text(tokenizer, text)
    tokens = token_strings(tokenizer, ids)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    kwargs: dict[str, Any] = {"input_ids": input_ids, "return_weights": True}
    if "attention_mask" in inspect.signature(model.forward).parameters:
        kwargs["attention_mask"] = torch.ones_like(input_ids)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(**kwargs)
    finally:
        model.train(was_training)
    attentions = getattr(out, "attentions", None)
    if not attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights when asked (return_weights=True)")
    return [a.float().cpu() for a in attentions], tokens


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>%%TITLE%%</title>
<style>%%CSS%%</style>
</head>
<body>
<h1>%%TITLE%%</h1>
<p class="help">Left column: tokens that attend (queries). Right column: tokens attended to (keys).
Line opacity is the attention weight. Hover a token to isolate its lines; click a head's swatch to
toggle it, double-click to show that head alone.</p>
<div id="controls">
  <label id="kind-label">Attention <select id="kind"></select></label>
  <label>Layer <select id="layer"></select></label>
  <span id="heads"></span>
  <button id="all-heads" type="button">all heads</button>
  <button id="no-heads" type="button">none</button>
</div>
<svg id="view" xmlns="http://www.w3.org/2000/svg"></svg>
<script type="application/json" id="attention-data">%%DATA%%</script>
<script>%%JS%%</script>
</body>
</html>
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .3em 0; }
.help { font-size: .85em; color: #555; max-width: 46em; }
#controls { margin: .8em 0; display: flex; gap: .8em; align-items: center; flex-wrap: wrap; }
#heads { display: inline-flex; gap: 3px; }
.swatch { width: 18px; height: 18px; border: 2px solid #222; cursor: pointer; font-size: 10px;
          color: #fff; display: inline-flex; align-items: center; justify-content: center; }
.swatch.off { opacity: .2; }
svg text { font-family: ui-monospace, monospace; font-size: 13px; cursor: default; }
svg text.active { font-weight: bold; }
"""

# Written for glassformer: a small view in plain DOM/SVG calls. The page's JSON is either one view
# (``tokens`` on both sides) or ``views``, each with its own query and key tokens (head_view_data,
# kind_view_data); the script reads both as a list of views.
_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("attention-data").textContent);
  var SVG = "http://www.w3.org/2000/svg";  // the SVG namespace name, not a download
  var views = data.views || [{
    name: "", queries: data.tokens, keys: data.tokens, n_layers: data.n_layers,
    n_heads: data.n_heads, attention: data.attention
  }];
  var rowH = 22, colGap = 260, leftX = 170, top = 20;
  var state = { view: 0, layer: 0, heads: [], hover: null };  // hover: {side: "q" or "k", index: i}
  var view, columns, swatches = [];

  function color(h) { return data.colors[h % data.colors.length]; }
  function el(name, attrs) {
    var e = document.createElementNS(SVG, name);
    for (var a in attrs) e.setAttribute(a, attrs[a]);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  // Controls: the kind menu (several views only), the layer menu and one swatch per head.
  var kindSelect = document.getElementById("kind");
  if (views.length < 2) document.getElementById("kind-label").style.display = "none";
  views.forEach(function (v, i) {
    var opt = document.createElement("option");
    opt.value = i; opt.textContent = v.name;
    kindSelect.appendChild(opt);
  });
  kindSelect.addEventListener("change", function () { choose(+kindSelect.value); });
  var layerSelect = document.getElementById("layer");
  layerSelect.addEventListener("change", function () { state.layer = +layerSelect.value; update(); });
  var headBox = document.getElementById("heads");
  function setAll(on) { state.heads = state.heads.map(function () { return on; }); update(); }
  document.getElementById("all-heads").addEventListener("click", function () { setAll(true); });
  document.getElementById("no-heads").addEventListener("click", function () { setAll(false); });

  var svg = document.getElementById("view");
  var lineLayer = el("g", {}), tokenLayer = el("g", {});
  svg.appendChild(lineLayer); svg.appendChild(tokenLayer);
  function y(i) { return top + i * rowH; }

  // Show view i: its layers, its heads and its two columns of tokens (queries left, keys right).
  function choose(i) {
    view = views[i]; state.view = i; state.layer = 0; state.hover = null;
    clear(layerSelect);
    for (var l = 0; l < view.n_layers; l++) {
      var opt = document.createElement("option");
      opt.value = l; opt.textContent = l;
      layerSelect.appendChild(opt);
    }
    clear(headBox); swatches = []; state.heads = [];
    for (var h = 0; h < view.n_heads; h++) {
      state.heads.push(true);
      var s = document.createElement("span");
      s.className = "swatch"; s.style.background = color(h); s.textContent = h; s.title = "head " + h;
      s.addEventListener("click", (function (k) {
        return function () { state.heads[k] = !state.heads[k]; update(); };
      })(h));
      s.addEventListener("dblclick", (function (k) {
        return function () { state.heads = state.heads.map(function (_, j) { return j === k; }); update(); };
      })(h));
      headBox.appendChild(s); swatches.push(s);
    }
    clear(tokenLayer);
    columns = {
      q: { x: leftX, anchor: "end", tokens: view.queries },
      k: { x: leftX + colGap, anchor: "start", tokens: view.keys }
    };
    var rows = Math.max(view.queries.length, view.keys.length);
    svg.setAttribute("width", leftX + colGap + 220);
    svg.setAttribute("height", top + rows * rowH + 10);
    Object.keys(columns).forEach(function (side) {
      var col = columns[side];
      col.boxes = []; col.texts = [];
      col.tokens.forEach(function (token, j) {
        var wdt = 8 * Math.max(token.length, 1) + 8;
        var box = el("rect", {
          x: col.anchor === "end" ? col.x - wdt + 4 : col.x - 4, y: y(j) - 15, width: wdt,
          height: rowH - 4, fill: "#ff9900", "fill-opacity": 0
        });
        var t = el("text", { x: col.x, y: y(j), "text-anchor": col.anchor });
        t.textContent = token;
        [box, t].forEach(function (node) {
          node.addEventListener("mouseenter", function () { state.hover = { side: side, index: j }; update(); });
          node.addEventListener("mouseleave", function () { state.hover = null; update(); });
        });
        tokenLayer.appendChild(box); tokenLayer.appendChild(t);
        col.boxes.push(box); col.texts.push(t);
      });
    });
    update();
  }

  function update() {
    swatches.forEach(function (s, h) { s.classList.toggle("off", !state.heads[h]); });
    var att = view.attention[state.layer];
    var nq = view.queries.length, nk = view.keys.length;
    var active = [];
    state.heads.forEach(function (on, h) { if (on) active.push(h); });
    var hv = state.hover;
    clear(lineLayer);
    // Many heads on top of each other saturate; thin them out as more heads are shown.
    var damp = Math.max(1, active.length / 3);
    active.forEach(function (h) {
      for (var i = 0; i < nq; i++) {
        if (hv && hv.side === "q" && hv.index !== i) continue;
        for (var j = 0; j < nk; j++) {
          if (hv && hv.side === "k" && hv.index !== j) continue;
          var w = att[h][i][j];
          if (w < 0.01) continue;
          lineLayer.appendChild(el("line", {
            x1: leftX + 8, y1: y(i) - 4, x2: leftX + colGap - 8, y2: y(j) - 4,
            stroke: color(h), "stroke-width": 2, "stroke-opacity": Math.min(1, hv ? w : w / damp)
          }));
        }
      }
    });
    // Hovering a token shades the other column by the mean weight over the shown heads.
    Object.keys(columns).forEach(function (side) {
      var col = columns[side];
      for (var i = 0; i < col.tokens.length; i++) {
        var a = 0;
        if (hv && hv.side !== side && active.length) {
          active.forEach(function (h) {
            a += side === "k" ? att[h][hv.index][i] : att[h][i][hv.index];
          });
          a /= active.length;
        }
        col.boxes[i].setAttribute("fill-opacity", Math.min(1, a));
        col.texts[i].setAttribute("class", hv && hv.side === side && hv.index === i ? "active" : "");
      }
    });
  }
  choose(0);
})();
"""
