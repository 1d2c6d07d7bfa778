"""``glassformer attention CHECKPOINT "text"``: draw what every head of a model attends to.

For a ViT checkpoint the argument is an image file: ``glassformer attention CHECKPOINT image.png``
lays each head's [CLS] attention and the attention rollout over the image (``glassformer.viz.vit``).
For an encoder-decoder (transformer, t5, bart) the text is translated first; the PNG is the
cross-attention alignment (source x target, ``glassformer.viz.alignment``) and the head view holds
the encoder, decoder and cross heads.
``run_classify_images`` is ``glassformer classify`` for a ViT (the verb itself is in
``models/bert/cli.py``, which hands a ViT checkpoint over to it).

Works for any family: the model folder is opened with ``glassformer.models.load_model`` (which
reads the family from ``config.json``) and its tokenizer with
``glassformer.tokenizers.load_tokenizer`` from the same folder. See
``glassformer.viz.attention.model_attention`` for what the model must offer.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument("text", help="the text to run through the model (for a ViT checkpoint: an image file)")
    p.add_argument("--out", default="out/attention", help="output folder (default: out/attention)")
    p.add_argument("--layer", type=int, default=None, help="draw only this layer in the PNG (0-based)")
    p.add_argument("--direction", default=None,
                   help="encoder-decoders: en-de or de-en (default: the first the run learned, else en-de)")  # fmt: skip
    p.set_defaults(func=run)


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def run_classify_images(args: argparse.Namespace) -> int:
    """``glassformer classify VIT_CHECKPOINT image.png|folder ...``: each image's top-3 classes."""
    from glassformer.viz.vit import classify_images

    if args.file:
        raise ValueError("--file lists texts; for a ViT checkpoint give image files or folders as arguments")
    results, notes = classify_images(args.checkpoint, args.texts, k=3)
    _print_notes(notes)
    for path, top in results:
        if args.json:
            print(json.dumps({"image": str(path), "top": [{"label": n, "probability": p} for n, p in top]}))
        else:
            print(f"{path}\t" + "  ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


def run_vit(args: argparse.Namespace) -> int:
    """``glassformer attention VIT_CHECKPOINT image.png``: per-head and rollout overlays."""
    from glassformer.viz.vit import attention_pictures

    layer = -1 if args.layer is None else args.layer
    paths, notes = attention_pictures(args.checkpoint, args.text, args.out, layer=layer)
    _print_notes(notes)
    print(f"heads of layer {layer if layer >= 0 else 'last'}: {paths[0]}")
    print(f"attention rollout: {paths[1]}")
    return 0


def run_seq2seq(args: argparse.Namespace) -> int:
    """``glassformer attention SEQ2SEQ_CHECKPOINT "text"``: translate, then picture the three kinds."""
    from glassformer.translation import load_translator
    from glassformer.viz.alignment import attention_kinds, plot_alignment, translation_attention
    from glassformer.viz.attention import write_kinds_head_view_html

    translator = load_translator(args.checkpoint)  # its tokenizer and the directions its run learned
    learned = translator.directions
    direction = args.direction or (learned[0] if learned else "en-de")
    found = translation_attention(translator.model, translator.tokenizer, args.text, direction=direction,
                                  directions=learned)  # fmt: skip
    n_layers = found.cross.shape[0]
    if args.layer is not None and not 0 <= args.layer < n_layers:
        raise ValueError(f"--layer {args.layer} is out of range: the decoder has {n_layers} layers")
    layer = n_layers - 1 if args.layer is None else args.layer
    out = Path(args.out)
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in found.translation[:50])
    title = f"{Path(args.checkpoint).name} ({direction}): {args.text[:50]} -> {shown}"
    png = plot_alignment(found, out / f"alignment_layer{layer}.png", layer=layer, per_head=True,
                         title=f"cross-attention, layer {layer}: {title}")  # fmt: skip
    kinds = attention_kinds(found)
    page = write_kinds_head_view_html(kinds, out / "head_view.html", title=f"head view: {title}")
    print(f"translation: {found.translation}")
    print(f"{len(found.source_tokens)} source and {len(found.target_tokens)} target tokens, "
          f"{found.encoder.shape[0]} encoder and {n_layers} decoder layers x {found.cross.shape[1]} heads")  # fmt: skip
    print(f"alignment: {png}")
    print(f"head view: {page}")
    return 0


def run(args: argparse.Namespace) -> int:
    from glassformer.models import load_model
    from glassformer.viz.vit import is_vit_checkpoint

    if is_vit_checkpoint(args.checkpoint):
        return run_vit(args)
    from glassformer.viz.attention import model_attention, plot_attention_heads, write_head_view_html

    model = load_model(args.checkpoint)  # fails first, with a clear message, on a folder that is no model
    if hasattr(model, "attention_maps"):
        del model  # opened again with its tokenizer and run record
        return run_seq2seq(args)
    if args.direction is not None:
        raise ValueError(
            f"--direction is for encoder-decoder checkpoints; {type(model).__name__} does not translate"
        )

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
