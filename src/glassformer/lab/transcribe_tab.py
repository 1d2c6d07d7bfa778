"""Transcribe: a recording in, Whisper's transcript out, with its segments, its speed, and where
each token sits in the spectrogram.

A thin layer over ``glassformer.models.whisper.transcribe.transcribe`` (text, segments with
times, real-time factor) and ``glassformer.viz.speech`` (``align_tokens`` times the first
window's tokens from the cross-attention of the alignment heads; ``plot_spectrogram_tokens``
draws them on the log-mel). The model comes from the lab's list (Whisper tiny.en by default).

An upload is checked on the server before anything decodes it: it must be a file Gradio stored
in the lab's own folder, at most ``max_audio_bytes`` large and, by its header, at most
``max_audio_seconds`` long, in a format ``glassformer.audio`` reads (WAV, FLAC, OGG).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassformer.lab.catalog import Loaded
from glassformer.lab.context import LabContext
from glassformer.lab.limits import MAX_BEAMS, LabInputError, beam_count

TITLE = "Transcribe"


@dataclass
class Transcribed:
    """What the tab shows for one recording."""

    text: str
    segments: list[list[object]]  # [start s, end s, text]
    summary: str  # duration, decoding, real-time factor
    picture: Path | None  # the spectrogram with tokens; None when nothing was said


def check_upload(ctx: LabContext, path: str | os.PathLike[str]) -> Path:
    """The upload at ``path`` when it is this lab's, small and short enough, and readable audio."""
    from glassformer.audio import AudioError
    from glassformer.audio.io import audio_duration

    path = Path(path).resolve()
    limits = ctx.limits
    if ctx.workdir.resolve() not in path.parents or not path.is_file():
        raise LabInputError("that file is not an upload of this lab; upload the recording again")
    size = path.stat().st_size
    if size > limits.max_audio_bytes:
        raise LabInputError(f"the recording is {size:,} bytes; the lab takes at most {limits.max_audio_bytes:,}. "
                            "Send a shorter clip (or a FLAC, about half the size of a WAV)")
    try:
        seconds = audio_duration(path)  # the header only: nothing is decoded yet
    except AudioError as err:
        reason = str(err).replace(str(path), path.name)  # the lab's folder is nobody's business
        raise LabInputError(f"the upload is not audio the lab can read ({reason}); "
                            "upload a WAV, FLAC or OGG recording") from None
    if seconds > limits.max_audio_seconds:
        raise LabInputError(f"the recording is {seconds:.1f} s long; the lab transcribes at most "
                            f"{limits.max_audio_seconds} s. Trim it (or start the lab with a higher --max-audio-seconds)")
    return path


def transcribe_upload(ctx: LabContext, model_name: str, path: str | os.PathLike[str], beam_size: object = 1,
                      timestamps: bool = False) -> Transcribed:
    """Transcribe the uploaded recording with the speech model ``model_name``."""
    from glassformer.audio import load_audio
    from glassformer.models.whisper.transcribe import transcribe

    path = check_upload(ctx, path)
    beams = beam_count(beam_size)
    loaded = ctx.catalog.get(model_name, "speech")
    result = transcribe(loaded.model, loaded.tokenizer, path, beam_size=None if beams == 1 else beams,
                        timestamps=bool(timestamps))
    rows = [[round(s.start, 2), round(s.end, 2), s.text] for s in result.segments]
    decoding = "greedy" if beams == 1 else f"beam search ({beams} beams)"
    summary = (f"{model_name}: {result.duration:.1f} s of audio, {len(result.windows)} window(s), {decoding}; "
               f"real-time factor {result.real_time_factor:.3f} (processing time / audio duration; below 1 is "
               "faster than real time)")
    picture = spectrogram_picture(ctx, loaded, load_audio(path), result)
    return Transcribed(result.text, rows, summary, picture)


def default_alignment_heads(model: Any) -> list[tuple[int, int]]:
    """Every head of the decoder's second half: Whisper's own choice for a model that lists none."""
    layers, heads = model.config.n_decoder_layers, model.config.n_heads
    return [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]


def spectrogram_picture(ctx: LabContext, loaded: Loaded, audio: Any, result: Any) -> Path | None:
    """PNG of the first window that holds text: its log-mel with each token at its DTW start time."""
    import numpy as np
    import torch

    from glassformer.audio import HOP_LENGTH, log_mel_spectrogram
    from glassformer.audio.io import WHISPER_RATE
    from glassformer.models.whisper.transcribe import WHISPER_FRAMES, Vocabulary
    from glassformer.viz.speech import align_tokens, plot_spectrogram_tokens

    vocab = Vocabulary(loaded.model, loaded.tokenizer)
    last_text = vocab.timestamp_begin if vocab.timestamp_begin is not None else loaded.model.config.vocab_size
    window = next((w for w in result.windows if not w.skipped and any(t < last_text for t in w.tokens)), None)
    if window is None:
        return None
    tokens = [t for t in window.tokens if t < last_text]
    frames = min(loaded.model.config.max_frames, WHISPER_FRAMES)
    first = round(window.start * WHISPER_RATE)
    chunk = np.ascontiguousarray(audio[first : first + frames * HOP_LENGTH])
    padding = frames * HOP_LENGTH if frames == WHISPER_FRAMES else None  # as transcribe feeds the model
    weight = next(loaded.model.parameters())
    features = log_mel_spectrogram(torch.from_numpy(chunk), loaded.model.config.n_mels, padding_to=padding)
    features = features.to(device=weight.device, dtype=weight.dtype)
    seconds = len(chunk) / WHISPER_RATE
    heads = loaded.alignment_heads or default_alignment_heads(loaded.model)
    alignment = align_tokens(loaded.model, loaded.tokenizer, features, vocab.prompt(False), tokens, heads, seconds)
    title = f"log-mel from {window.start:.1f} s with each token at its start (cross-attention + DTW)"
    return plot_spectrogram_tokens(features.float(), alignment, ctx.new_file("spectrogram", ".png"),
                                   duration=seconds, title=title)


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names("speech")
    limits = ctx.limits
    notes = "; ".join(f"**{e.name}**: {e.note}" for e in ctx.catalog.entries if e.kind == "speech" and e.note)
    model = gr.Dropdown(names, value=names[0] if names else None, label="Speech model", elem_id="asr-model")
    if notes:
        gr.Markdown(notes)
    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", buttons=["download"],
                     label=f"Recording: WAV, FLAC or OGG, at most {limits.max_audio_seconds} s and "
                     f"{limits.max_audio_bytes / 1e6:.0f} MB", elem_id="asr-audio")
    with gr.Row():
        beams = gr.Slider(1, MAX_BEAMS, value=1, step=1, label="Beam size (1 = greedy)", elem_id="asr-beams")
        timestamps = gr.Checkbox(False, label="Timestamps (segments from Whisper's time tokens)",
                                 elem_id="asr-timestamps")
        run = gr.Button("Transcribe", variant="primary", elem_id="asr-run")
    text = gr.Textbox(label="Transcript", interactive=False, elem_id="asr-text")
    summary = gr.Markdown(elem_id="asr-summary")
    segments = gr.Dataframe(headers=["start (s)", "end (s)", "text"], label="Segments", elem_id="asr-segments")
    picture = gr.Image(label="Spectrogram and transcript tokens", type="filepath", elem_id="asr-png",
                       buttons=["download", "fullscreen"])

    @error_boundary
    def run_one(model_name: str, path: str | None, beam_value: float, stamps: bool) -> tuple[Any, ...]:
        if not path:
            raise LabInputError("no recording yet: upload a file or record one first")
        out = transcribe_upload(ctx, model_name, path, beam_value, stamps)
        return out.text, out.summary, out.segments, None if out.picture is None else str(out.picture)

    run.click(run_one, [model, audio, beams, timestamps], [text, summary, segments, picture], concurrency_id="models")
