"""Attention explorer: a sentence, a model, a layer and a head -> a heatmap and the head view.

A thin layer over ``glassformer.viz.attention``: ``model_attention`` runs the model, and
``plot_attention_heads`` / ``write_head_view_html`` draw what ``glassformer attention`` draws.
The head view is a self-contained page, so the tab shows it in a sandboxed ``iframe`` (scripts on,
nothing else) rather than mixing its script into the lab's page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from glassformer.lab.catalog import TEXT_KINDS
from glassformer.lab.context import LabContext

TITLE = "Attention explorer"
EXAMPLE = "The animal didn't cross the street because it was too tired"


@dataclass
class Explained:
    """The pictures of one sentence: the heatmap PNG, the head view page, and a one-line summary."""

    png: Path
    head_view: str
    summary: str
    n_layers: int
    n_heads: int


def explain(ctx: LabContext, model_name: str, text: str, layer: int | float, head: int | float | None) -> Explained:
    """Run ``model_name`` on ``text`` and draw layer ``layer`` (one ``head``, or all when None)."""
    from glassformer.viz.attention import model_attention, plot_attention_heads, write_head_view_html

    text = ctx.limits.text(text, "sentence")
    loaded = ctx.catalog.get(model_name, *TEXT_KINDS)
    attentions, tokens = model_attention(loaded.model, loaded.tokenizer, text)
    n_layers, n_heads = len(attentions), int(attentions[0].shape[1])
    layer = ctx.limits.index(layer, n_layers, "layer")
    head = None if head is None else ctx.limits.index(head, n_heads, "head")
    which = f"layer {layer}" + ("" if head is None else f" head {head}")
    png = plot_attention_heads(attentions, tokens, ctx.new_file("attention", ".png"), layer=layer, head=head,
                               title=f"{model_name}, {which}")
    page = write_head_view_html(attentions, tokens, ctx.new_file("head-view", ".html"), title=f"{model_name}: head view")
    summary = f"{model_name}: {len(tokens)} tokens, {n_layers} layers x {n_heads} heads; showing {which}"
    return Explained(png, page.read_text(encoding="utf-8"), summary, n_layers, n_heads)


def iframe(page: str) -> str:
    """The head view page inside a sandboxed iframe (its own document: scripts run, nothing leaves)."""
    return (f'<iframe class="head-view" sandbox="allow-scripts" style="width:100%;height:560px;border:0" '
            f'srcdoc="{html.escape(page, quote=True)}"></iframe>')


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names(*TEXT_KINDS)
    with gr.Row():
        text = gr.Textbox(EXAMPLE, label="Sentence", max_length=ctx.limits.max_chars, scale=3, elem_id="attn-text")
        model = gr.Dropdown(names, value=names[0], label="Model", elem_id="attn-model")
    with gr.Row():
        layer = gr.Number(0, label="Layer (0-based)", precision=0, minimum=0, elem_id="attn-layer")
        head = gr.Textbox("all", label="Head (a number, or 'all')", elem_id="attn-head")
        run = gr.Button("Show attention", variant="primary", elem_id="attn-run")
    summary = gr.Markdown(elem_id="attn-summary")
    picture = gr.Image(label="Heatmap (rows: queries, columns: keys)", type="filepath", elem_id="attn-png",
                       buttons=["download", "fullscreen"])
    view = gr.HTML(elem_id="attn-view")

    @error_boundary
    def show(model_name: str, sentence: str, layer_value: float, head_value: str) -> tuple[str, str, str]:
        chosen = head_value.strip().lower()
        head_index = None if chosen in ("", "all") else _head_number(chosen)
        out = explain(ctx, model_name, sentence, layer_value, head_index)
        return out.summary, str(out.png), iframe(out.head_view)

    run.click(show, [model, text, layer, head], [summary, picture, view], concurrency_id="models")


def _head_number(value: str) -> int:
    from glassformer.lab.limits import LabInputError

    if not value.isdigit():
        raise LabInputError(f"head {value!r} is not a head number; give 0, 1, ... or 'all'")
    return int(value)
