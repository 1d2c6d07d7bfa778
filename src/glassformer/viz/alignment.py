"""What a translation looked at: the cross-attention alignment of an encoder-decoder, as a heatmap.

In every decoder layer, cross-attention lets each target position read the encoder's output. Head
``h`` of layer ``l`` holds a ``target x source`` matrix whose row ``i`` says how the step that
produced target token ``i`` spread its attention over the source tokens (each row sums to 1).
Averaged over the heads of a layer, it is a soft word alignment: for a good translation model the
mass lies near a diagonal that bends where the two languages order words differently (Bahdanau et
al. 2015 drew the first such pictures).

* :func:`seq2seq_attention` runs one teacher-forced pass (``EncoderDecoderModel.attention_maps``)
  over a source and a target and returns the three kinds of weights of the pair
  (:class:`Seq2SeqAttention`): encoder self-attention, decoder self-attention, cross-attention.
* :func:`translation_attention` first translates a text (greedy or beam, as
  ``glassformer.translation`` frames and decodes it), then does the same for the translation.
* :func:`alignment_matrix` is one layer's cross-attention, averaged over its heads or one head;
  :func:`plot_alignment` draws it (and optionally every head beside it) to a PNG.
* :func:`attention_kinds` lists the three kinds for the HTML head view
  (``glassformer.viz.attention.write_kinds_head_view_html``); ``glassformer attention`` writes both
  pictures for an encoder-decoder checkpoint.

Decoder positions are labelled two ways. The decoder *reads* its inputs (the start token, then
the translation shifted right); position ``i`` *produces* target token ``i``. The alignment picture
labels its rows with what each step produced, as translation papers do; the head view labels
decoder positions with the tokens they read, because the decoder's self-attention keys are those.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glassformer.viz.attention import DPI, AttentionKind, attention_array, token_strings
from glassformer.viz.figures import pyplot, save_figure

ENCODER_DECODER_FAMILIES = "transformer, t5, bart"


@dataclass
class Seq2SeqAttention:
    """The attention of one source/target pair, each kind an array ``(layers, heads, query, key)``.

    ``decoder_tokens`` are what the decoder read at each position, ``target_tokens`` what each
    position produced (the same length: the target's last token is never read).
    """

    source_tokens: list[str]
    decoder_tokens: list[str]
    target_tokens: list[str]
    encoder: np.ndarray  # (L_enc, H, S, S)
    decoder: np.ndarray  # (L_dec, H, T, T)
    cross: np.ndarray  # (L_dec, H, T, S)
    translation: str = ""


def check_encoder_decoder(model: nn.Module) -> None:
    """Refuse a model without cross-attention over token ids, saying what would work instead."""
    name = type(model).__name__
    if not hasattr(model, "attention_maps"):
        raise ValueError(
            f"{name} is not an encoder-decoder: it has no cross-attention to align a translation with. "
            f"Use a {ENCODER_DECODER_FAMILIES} checkpoint, or glassformer.viz.attention.model_attention "
            "(`glassformer attention`) for its self-attention"
        )
    if "input_features" in inspect.signature(model.encode).parameters:
        raise ValueError(
            f"{name} encodes audio features, not text: its cross-attention over time is drawn by "
            "glassformer.viz.speech (lesson 11), not by the translation alignment"
        )


def seq2seq_attention(
    model: nn.Module, source_ids: Sequence[int], target_ids: Sequence[int], tokenizer: Any = None
) -> Seq2SeqAttention:
    """Every attention map of one pair: ``source_ids`` framed as the encoder reads them, and the
    ``target_ids`` the decoder produced (ending with ``</s>`` when decoding stopped there).

    The decoder reads ``decoder_start_token_id`` then ``target_ids[:-1]``. Token labels come from
    ``tokenizer`` when given, else they are the ids. Runs in eval mode without gradients.
    """
    check_encoder_decoder(model)
    if not source_ids or not target_ids:
        raise ValueError("the source and the target need at least one token each")
    decoder_ids = [int(model.decoder_start_token_id), *map(int, target_ids[:-1])]
    device = next(model.parameters()).device
    src = torch.tensor([list(map(int, source_ids))], dtype=torch.long, device=device)  # (1, S)
    dec = torch.tensor([decoder_ids], dtype=torch.long, device=device)  # (1, T)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.attention_maps(src, dec, torch.ones_like(src), torch.ones_like(dec))
    finally:
        model.train(was_training)

    def labels(ids: Sequence[int]) -> list[str]:
        return token_strings(tokenizer, ids) if tokenizer is not None else [str(int(i)) for i in ids]

    return Seq2SeqAttention(
        source_tokens=labels(source_ids), decoder_tokens=labels(decoder_ids), target_tokens=labels(target_ids),
        encoder=attention_array(out.encoder_attentions), decoder=attention_array(out.attentions),
        cross=attention_array(out.cross_attentions),
    )  # fmt: skip


def translation_attention(
    model: nn.Module, tokenizer: Any, text: str, *, direction: str = "en-de", directions: Sequence[str] = (),
    strategy: str = "beam", num_beams: int = 4, length_penalty: float = 1.0, max_new_tokens: int | None = None,
    **generation: Any,
) -> Seq2SeqAttention:  # fmt: skip
    """Translate ``text`` as ``glassformer.translation.translate`` does (the same framing, prefix and
    checks; beam 4 by default), then return the attention of the source and its translation.
    ``generation`` passes more ``GenerationConfig`` fields (``cpu_kernels=False`` ...)."""
    from glassformer.generate import generate
    from glassformer.translation.translate import encode_sources, source_prefix

    check_encoder_decoder(model)
    source = encode_sources(model, tokenizer, [text], source_prefix(model, direction, directions))[0]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is None or pad is None:
        raise ValueError(
            "the tokenizer names no eos or pad token (tokenizer_config.json eos_token / pad_token)"
        )
    beams = {"num_beams": num_beams, "length_penalty": length_penalty} if strategy == "beam" else {}
    limit = max_new_tokens or min(model.max_seq_len, 2 * len(source) + 10)
    result = generate(model, [source], strategy=strategy, max_new_tokens=limit, stop_token_ids=(eos,),
                      pad_token_id=pad, **beams, **generation)  # fmt: skip
    target = result.tokens[0]
    found = seq2seq_attention(model, source, target, tokenizer)
    found.translation = tokenizer.decode(target, skip_special_tokens=True).strip()
    return found


def alignment_matrix(cross: np.ndarray, layer: int = -1, head: int | None = None) -> np.ndarray:
    """``(target, source)``: layer ``layer``'s cross-attention (negative counts from the last),
    averaged over its heads, or head ``head`` alone. Each row still sums to 1."""
    cross = np.asarray(cross, dtype=np.float64)
    if cross.ndim != 4:
        raise ValueError(f"cross-attention must be (layers, heads, target, source), got shape {cross.shape}")
    n_layers, n_heads = cross.shape[:2]
    if not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer={layer} is out of range: the decoder has {n_layers} layers (0..{n_layers - 1})"
        )
    if head is not None and not 0 <= head < n_heads:
        raise ValueError(f"head={head} is out of range: each layer has {n_heads} heads (0..{n_heads - 1})")
    weights = cross[layer]  # (H, T, S)
    return weights.mean(axis=0) if head is None else weights[head]


def plot_alignment(
    attention: Seq2SeqAttention, path: str | os.PathLike[str], *, layer: int = -1, per_head: bool = False,
    title: str | None = None,
) -> Path:  # fmt: skip
    """Draw the source x target alignment of ``layer`` to a PNG: source tokens along the top, one row
    per produced target token; with ``per_head`` each head gets a panel beside the mean."""
    plt = pyplot()

    t, s = len(attention.target_tokens), len(attention.source_tokens)
    if attention.cross.shape[2:] != (t, s):
        raise ValueError(
            f"cross-attention covers {attention.cross.shape[2]} targets x {attention.cross.shape[3]} sources but "
            f"{t} target and {s} source tokens were given"
        )
    n_layers, n_heads = attention.cross.shape[:2]
    panels = [(f"mean of {n_heads} heads", alignment_matrix(attention.cross, layer))]
    if per_head:
        panels += [(f"head {h}", alignment_matrix(attention.cross, layer, h)) for h in range(n_heads)]
    cell = 0.32
    width, height = max(2.5, cell * s + 1.2), max(2.5, cell * t + 1.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), dpi=DPI, squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (name, matrix) in zip(axes[0], panels):
        ax.imshow(matrix, cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_xticks(range(s), attention.source_tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(t), attention.target_tokens, fontsize=8)
        ax.xaxis.tick_top()
        ax.set_title(name, fontsize=9)
        ax.tick_params(length=0)
    shown = layer if layer >= 0 else n_layers + layer
    fig.suptitle(title or f"cross-attention of decoder layer {shown}: rows = target tokens, columns = source",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, path, dpi=DPI)


def attention_kinds(attention: Seq2SeqAttention) -> list[AttentionKind]:
    """The three kinds for ``write_kinds_head_view_html``: encoder, decoder and cross attention."""
    src, dec = attention.source_tokens, attention.decoder_tokens

    def layers(a: np.ndarray) -> list[np.ndarray]:
        return [layer[None] for layer in a]  # the bertviz layout: one (1, H, Tq, Tk) per layer

    return [
        AttentionKind("encoder self-attention", layers(attention.encoder), src, src),
        AttentionKind("decoder self-attention (causal)", layers(attention.decoder), dec, dec),
        AttentionKind("cross-attention (target reads source)", layers(attention.cross), dec, src),
    ]
