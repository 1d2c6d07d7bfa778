"""``glassformer attention CHECKPOINT "text"``: draw what every head of a model attends to.

Works for any family: the model folder is opened with ``glassformer.models.load_model`` (which
reads the family from ``config.json``) and its tokenizer with
``glassformer.tokenizers.load_tokenizer`` from the same folder. See
``glassformer.viz.attention.model_attention`` for what the model must offer.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "attention",
        help="picture what each head attends to: heatmaps (PNG) and a head view (HTML)",
        description="Run a saved model on TEXT and picture its attention: a PNG grid of heatmaps "
        "(one row per layer, one column per head) and a self-contained HTML head view.",
    )
    p.add_argument("checkpoint", help="a glassformer model folder (config.json, model.safetensors, tokenizer)")
    p.add_argument("text", help="the text to run through the model")
    p.add_argument("--out", default="out/attention", help="output folder (default: out/attention)")
    p.add_argument("--layer", type=int, default=None, help="draw only this layer in the PNG (0-based)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glassformer.models import load_model
    from glassformer.viz.attention import model_attention, plot_attention_heads, write_head_view_html

    model = load_model(args.checkpoint)  # fails first, with a clear message, on a folder that is no model

    from glassformer.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(args.checkpoint)
    attentions, tokens = model_attention(model, tokenizer, args.text)
    if args.layer is not None and not 0 <= args.layer < len(attentions):
        raise ValueError(f"--layer {args.layer} is out of range: the model has {len(attentions)} layers")
    out = Path(args.out)
    name = f"attention_layer{args.layer}.png" if args.layer is not None else "attention_heads.png"
    title = f"{Path(args.checkpoint).name}: {args.text[:60]}"
    png = plot_attention_heads(attentions, tokens, out / name, layer=args.layer, title=title)
    page = write_head_view_html(attentions, tokens, out / "head_view.html", title=f"head view: {title}")
    heads = attentions[0].shape[1]
    print(f"{len(tokens)} tokens, {len(attentions)} layers x {heads} heads")
    print(f"heatmaps:  {png}")
    print(f"head view: {page}")
    return 0
