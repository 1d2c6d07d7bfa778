"""Translate: sentences in, an encoder-decoder's translations out, with the cross-attention picture
of the first one (which source tokens each target token read).

A thin layer over ``glassformer.translation.translate`` (the framing, task prefix and direction
checks of ``glassformer translate``) and ``glassformer.viz.alignment`` (``translation_attention``
decodes the first sentence again with the same settings and keeps its attention; ``plot_alignment``
draws the source x target heatmap). The models are the lab's translators: runs found under
``out/`` and any ``--model RUN/best`` the operator listed.

Caps, checked on the server: the text (``max_chars``), the lines (``max_sentences``), the beams
(1 to 8), the length penalty (0 to 3) and the output length (``max_new_tokens``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassformer.lab.context import LabContext
from glassformer.lab.limits import MAX_BEAMS, LabInputError, beam_count

TITLE = "Translate"
DIRECTIONS = ("en-de", "de-en")
MAX_LENGTH_PENALTY = 3.0


@dataclass
class Translated:
    """What the tab shows for one request."""

    text: str  # one translation per input line
    summary: str  # model, decoding, speed
    picture: Path  # the first sentence's cross-attention alignment


def sentences(ctx: LabContext, text: object) -> list[str]:
    """The non-empty lines of ``text``, within the lab's caps on characters and on lines."""
    lines = [line.strip() for line in ctx.limits.text(text, "text to translate").splitlines() if line.strip()]
    if len(lines) > ctx.limits.max_sentences:
        raise LabInputError(f"{len(lines)} lines; the lab translates at most {ctx.limits.max_sentences} at once. "
                            "Send fewer (one sentence per line)")  # fmt: skip
    return lines


def length_penalty(value: object) -> float:
    """A length penalty from 0 to ``MAX_LENGTH_PENALTY`` (1: none; above 1 favours longer outputs)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_LENGTH_PENALTY:
        raise LabInputError(f"length penalty must be a number from 0 to {MAX_LENGTH_PENALTY:g}, got {value!r}")
    return float(value)


def translate_text(ctx: LabContext, model_name: str, text: object, direction: str = "en-de", beams: object = 4,
                   penalty: object = 1.0) -> Translated:  # fmt: skip
    """Translate each line of ``text`` with the translator ``model_name``; 1 beam is greedy decoding."""
    from glassformer.translation import translate
    from glassformer.viz.alignment import plot_alignment, translation_attention

    lines = sentences(ctx, text)
    n_beams, lp = beam_count(beams), length_penalty(penalty)
    if direction not in DIRECTIONS:
        raise LabInputError(f"direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    loaded = ctx.catalog.get(model_name, "translator")
    options: dict[str, Any] = dict(
        direction=direction, directions=loaded.directions, strategy="greedy" if n_beams == 1 else "beam",
        num_beams=n_beams, length_penalty=lp, cpu_kernels=ctx.catalog.cpu_kernels,
        max_new_tokens=min(ctx.limits.max_new_tokens, loaded.model.max_seq_len),
    )  # fmt: skip
    start = time.perf_counter()
    outputs = translate(loaded.model, loaded.tokenizer, lines, **options)
    seconds = time.perf_counter() - start
    attention = translation_attention(loaded.model, loaded.tokenizer, lines[0], **options)
    picture = plot_alignment(attention, ctx.new_file("alignment", ".png"),
                             title=f"{lines[0]}\n-> {attention.translation}")  # fmt: skip
    decoding = "greedy" if n_beams == 1 else f"beam search ({n_beams} beams, length penalty {lp:g})"
    summary = (f"{model_name}, {direction}: {len(lines)} sentence(s) in {seconds:.2f} s "
               f"({len(lines) / max(seconds, 1e-9):.1f} sentences/s), {decoding}")  # fmt: skip
    return Translated("\n".join(outputs), summary, picture)


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names("translator")
    if not names:
        gr.Markdown("No translation model is listed. Train one (`python bench/seq2seq.py --sections en_de`, or "
                    "`glassformer train transformer-base`) and restart the lab, or start it with "
                    "`--model RUN/best`.")  # fmt: skip
        return
    notes = "; ".join(f"**{e.name}**: {e.note}" for e in ctx.catalog.entries if e.kind == "translator" and e.note)
    model = gr.Dropdown(names, value=names[0], label="Translation model", elem_id="mt-model")
    if notes:
        gr.Markdown(notes)
    source = gr.Textbox(lines=4, max_length=ctx.limits.max_chars, elem_id="mt-text",
                        label=f"Sentences, one per line (at most {ctx.limits.max_sentences})")  # fmt: skip
    with gr.Row():
        direction = gr.Dropdown(list(DIRECTIONS), value=DIRECTIONS[0], label="Direction", elem_id="mt-direction")
        beams = gr.Slider(1, MAX_BEAMS, value=4, step=1, label="Beams (1 = greedy)", elem_id="mt-beams")
        penalty = gr.Slider(0, MAX_LENGTH_PENALTY, value=1.0, step=0.1, label="Length penalty", elem_id="mt-lp")
        run = gr.Button("Translate", variant="primary", elem_id="mt-run")
    output = gr.Textbox(label="Translations", interactive=False, lines=4, elem_id="mt-output")
    summary = gr.Markdown(elem_id="mt-summary")
    picture = gr.Image(label="Cross-attention of the first sentence (rows: target tokens, columns: source)",
                       type="filepath", elem_id="mt-png", buttons=["download", "fullscreen"])  # fmt: skip

    @error_boundary
    def run_one(name: str, text: str, way: str, n_beams: float, lp: float) -> tuple[str, str, str]:
        out = translate_text(ctx, name, text, way, n_beams, lp)
        return out.text, out.summary, str(out.picture)

    run.click(run_one, [model, source, direction, beams, penalty], [output, summary, picture],
              concurrency_id="models")  # fmt: skip
