"""``transcribe``: audio in, text out, with the decoding rules that make Whisper usable.

A Whisper model alone maps one 30-s window of log-mel features to tokens. Turning that into a
transcript of any recording takes the rules of OpenAI's ``whisper/transcribe.py`` (Radford et al.
2022, section 4.5), written here on top of :func:`glassformer.generate.generate`:

- **The prompt.** Every window is decoded after ``<|startoftranscript|>`` (+ ``<|notimestamps|>``
  unless timestamps are wanted), forced as ``decoder_input_ids``. With
  ``condition_on_previous_text`` the text of earlier windows goes before it, after
  ``<|startofprev|>`` (at most half the decoder's context), so names and style carry over.
- **Suppressed tokens.** Non-speech symbols and control tokens never; a blank and
  ``<|endoftext|>`` not as the first token (the tokenizer's lists, equal to the packaged
  ``config.json``'s ``suppress_ids`` / ``suppress_ids_begin``).
- **Temperature fallback.** A window is decoded at the first temperature (greedy, or beam search
  with ``beam_size``); when the text compresses too well (gzip ratio > 2.4: a loop repeating
  itself) or its average log-probability is below -1, it is decoded again by sampling at the next
  temperature, up to 1.0.
- **No speech.** The probability of ``<|nocaptions|>`` (``<|nospeech|>`` in newer vocabularies)
  right after ``<|startoftranscript|>`` says whether anyone speaks: above 0.6, with a low average
  log-probability, the window is silence and yields nothing. One addition to Whisper's rule: in a
  window whose loudest sample is below -60 dBFS (``QUIET_PEAK``) a high no-speech probability
  is enough on its own, since tiny.en still says a confident "you" to a second of digital silence.
- **Timestamps** (``timestamps=True``): the decoder also emits ``<|0.00|>``..``<|30.00|>`` tokens,
  kept consistent by :class:`TimestampRules` (pairs around each piece of text, never going back,
  the first within 1 s, and a timestamp forced whenever all timestamps together are likelier
  than the best text token).
- **Long audio.** Recordings past 30 s are decoded window by window: with timestamps the next
  window starts at the last complete timestamp, so no word is cut in two; without them, windows
  follow each other every 30 s.

A model whose encoder takes less than 30 s (``whisper-digits``: 3 s) and whose tokenizer has no
Whisper control tokens (``glassformer.data.speech.SpeechVocab``) works too: it is fed unpadded
features of at most its window and decoded from its start token, with no timestamps, no
suppression and no no-speech test.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from glassformer.audio import HOP_LENGTH, AudioError, load_audio, log_mel_spectrogram
from glassformer.audio.io import WHISPER_RATE
from glassformer.generate import GenerationConfig, generate
from glassformer.models.whisper.tokenizer import TIME_STEP
from glassformer.nn.cache import EncoderState

FRAMES_PER_SECOND = WHISPER_RATE // HOP_LENGTH  # 100 log-mel frames a second
FRAMES_PER_TIMESTAMP = round(TIME_STEP * FRAMES_PER_SECOND)  # 2: one timestamp step is 20 ms
WHISPER_FRAMES = 3000  # the 30-s window every OpenAI Whisper was trained on (padded with silence)
MAX_INITIAL_TIMESTAMP = 1.0  # seconds: the first timestamp of a window comes within this
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
NO_SPEECH_TOKENS = ("<|nospeech|>", "<|nocaptions|>")
QUIET_PEAK = 1e-3  # -60 dBFS: a window this quiet that the model calls no-speech is silence


class Segment(NamedTuple):
    """A stretch of the transcript: ``(start, end, text)``, times in seconds from the file's start."""

    start: float
    end: float
    text: str


@dataclass
class WindowDecode:
    """What decoding one window gave, after fallback: its tokens and the numbers that judged it."""

    start: float  # seconds: where the window starts in the recording
    tokens: list[int]  # text (and timestamp) tokens, without the prompt or <|endoftext|>
    text: str
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float  # nan when the vocabulary has no no-speech token
    skipped: bool = False  # judged silence: contributes no text


@dataclass
class Transcript:
    """The text of a recording, its segments, and how fast it was made.

    ``real_time_factor`` is processing time / audio duration (below 1 is faster than real time).
    ``windows`` keeps each window's decode (tokens, temperature, log-probability) for inspection.
    """

    text: str
    segments: list[Segment]
    language: str
    real_time_factor: float
    duration: float  # seconds of audio
    windows: list[WindowDecode] = field(default_factory=list)


class Vocabulary:
    """The few ids ``transcribe`` needs, from a Whisper tokenizer or a plain one and the model."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, language: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.language = language
        self.whisper = callable(getattr(tokenizer, "sot_sequence", None))
        config = model.config
        self.eot = tokenizer.eot if self.whisper else config.eos_token_id
        self.sot = tokenizer.sot if self.whisper else model.decoder_start_token_id
        self.timestamp_begin: int | None = tokenizer.timestamp_begin if self.whisper else None
        self.no_timestamps: int | None = tokenizer.no_timestamps if self.whisper else None
        ids = getattr(tokenizer, "ids", {})
        self.start_of_prev: int | None = ids.get("<|startofprev|>")
        self.no_speech: int | None = next((ids[t] for t in NO_SPEECH_TOKENS if t in ids), None)
        self.suppress = tuple(tokenizer.suppress_tokens()) if self.whisper else ()
        self.begin_suppress = tuple(tokenizer.begin_suppress_tokens()) if self.whisper else ()
        if self.whisper and tokenizer.is_multilingual and language is None:
            raise ValueError("a multilingual model needs language= (e.g. 'en'): spoken-language detection is not "
                             "implemented here")
        if self.whisper and tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"the tokenizer knows {tokenizer.vocab_size} tokens but the model {config.vocab_size}: they are "
                "not a pair; load both from the same folder (load_tiny_en() gives a matching pair)"
            )

    def prompt(self, timestamps: bool) -> list[int]:
        """The start of every window's decoder input (after any previous text)."""
        if not self.whisper:
            return [self.sot]
        return self.tokenizer.sot_sequence(language=self.language, timestamps=timestamps)

    def text(self, tokens: Sequence[int]) -> str:
        if self.timestamp_begin is not None:
            tokens = [t for t in tokens if t < self.timestamp_begin]
        return self.tokenizer.decode(list(tokens)).strip()


class TimestampRules:
    """Whisper's timestamp rules as a ``generate`` logits processor (``ApplyTimestampRules``).

    ``tokens`` are ``(B, prefix + new)``; only the new ones (from column ``prefix_length``) count:

    1. ``<|notimestamps|>`` is never emitted;
    2. timestamps come in pairs: after a pair (or the opening one) comes text; after a lone
       timestamp that follows text comes a second timestamp or ``<|endoftext|>``, not more text;
    3. they never go back: below the last one is forbidden (and below last + 1 after a pair end);
    4. the first token is a timestamp of at most ``MAX_INITIAL_TIMESTAMP`` seconds;
    5. when the timestamps' total probability beats the likeliest text token, a timestamp it is.
    """

    def __init__(self, vocab: Vocabulary, prefix_length: int) -> None:
        if vocab.timestamp_begin is None:
            raise ValueError("timestamps need a Whisper tokenizer (timestamp tokens); this one has none")
        self.begin = vocab.timestamp_begin
        self.eot, self.no_timestamps = vocab.eot, vocab.no_timestamps
        self.prefix_length = prefix_length
        self.max_initial = self.begin + round(MAX_INITIAL_TIMESTAMP / TIME_STEP)

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        logits = logits.clone()
        logits[:, self.no_timestamps] = -math.inf
        for row, seq in enumerate(tokens[:, self.prefix_length :].tolist()):
            self._pairs_and_order(logits[row], seq)
        if tokens.shape[1] == self.prefix_length:
            logits[:, : self.begin] = -math.inf
            logits[:, self.max_initial + 1 :] = -math.inf
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp_mass = torch.logsumexp(logprobs[:, self.begin :], dim=-1)
        best_text = logprobs[:, : self.begin].max(dim=-1).values
        logits[timestamp_mass > best_text, : self.begin] = -math.inf
        return logits

    def _pairs_and_order(self, row: Tensor, seq: list[int]) -> None:
        last_is_time = len(seq) >= 1 and seq[-1] >= self.begin
        second_last_is_time = len(seq) < 2 or seq[-2] >= self.begin
        if last_is_time:
            if second_last_is_time:  # a pair just closed (or the window opened): text must follow
                row[self.begin :] = -math.inf
            else:  # a lone timestamp: another timestamp (closing the piece) or more text, never the end
                row[: self.eot] = -math.inf
        stamps = [t for t in seq if t >= self.begin]
        if stamps:
            floor = stamps[-1] if last_is_time and not second_last_is_time else stamps[-1] + 1
            row[self.begin : floor] = -math.inf


class LogprobTracker:
    """Sums the log-probabilities of the tokens a single-row greedy or sampling decode chose.

    Wraps the other processors so it sees the logits the choice was made from (Whisper scores a
    decode with the processed distribution, before temperature). It learns each choice one step
    late, from ``tokens``, and the last one from :meth:`finish`.
    """

    def __init__(self, eot: int, inner: TimestampRules | None) -> None:
        self.eot, self.inner = eot, inner
        self.total = 0.0
        self.last: Tensor | None = None  # (V,) log-probabilities of the latest step

    def __call__(self, tokens: Tensor, logits: Tensor) -> Tensor:
        if self.inner is not None:
            logits = self.inner(tokens, logits)
        if self.last is not None:
            self.total += float(self.last[tokens[0, -1]])
        self.last = torch.log_softmax(logits[0].float(), dim=-1)
        return logits

    def finish(self, tokens: Sequence[int]) -> float:
        """The sum over ``tokens`` (the decode's output), adding the final choice."""
        if tokens and self.last is not None:
            self.total += float(self.last[tokens[-1]])
        return self.total


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression: high for text that repeats itself."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def transcribe(
    model: torch.nn.Module,
    tokenizer: Any,
    audio_or_path: str | Path | np.ndarray,
    *,
    beam_size: int | None = None,
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    timestamps: bool = False,
    condition_on_previous_text: bool = True,
    language: str | None = None,
    seed: int = 0,
) -> Transcript:
    """Transcribe a file (WAV/FLAC/OGG) or 16-kHz mono float samples with a Whisper model.

    ``beam_size`` (e.g. 5) decodes the first temperature by beam search instead of greedily;
    later temperatures sample (seeded by ``seed``, so a transcript is reproducible). A threshold of
    ``None`` turns its test off. ``language`` is the spoken language's code for a multilingual
    model (English-only models such as tiny.en take ``None`` or ``"en"``). Returns the text, its
    segments (one per window, or per timestamped piece with ``timestamps=True``), the language and
    the real-time factor.
    """
    started = time.perf_counter()
    audio = _load(audio_or_path)
    temperatures = _check_options(beam_size, temperatures)
    vocab = Vocabulary(model, tokenizer, language)
    if timestamps and vocab.timestamp_begin is None:
        raise ValueError("timestamps=True needs a Whisper tokenizer with timestamp tokens; this one has none")
    window_frames = min(model.config.max_frames, WHISPER_FRAMES)
    total_frames = len(audio) // HOP_LENGTH
    windows: list[WindowDecode] = []
    segments: list[Segment] = []
    history: list[int] = []  # the tokens earlier windows produced, for the previous-text prompt
    seek = 0
    while seek < total_frames:
        frames = min(window_frames, total_frames - seek)
        features = _window_features(model, audio, seek, window_frames)
        chunk = audio[seek * HOP_LENGTH : (seek + frames) * HOP_LENGTH]
        quiet = float(np.abs(chunk).max(initial=0.0)) < QUIET_PEAK
        prefix = _prefix(vocab, history if condition_on_previous_text else [], timestamps, model.max_seq_len)
        decoded = _decode_with_fallback(
            model, vocab, features, prefix, seek / FRAMES_PER_SECOND, quiet=quiet, timestamps=timestamps, beam_size=beam_size,
            temperatures=temperatures, compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold, seed=seed,
        )  # fmt: skip
        windows.append(decoded)
        if decoded.skipped:
            seek += frames
            continue
        found, advance = _segments(vocab, decoded, frames, timestamps)
        segments.extend(s for s in found if s.text)
        history = [] if decoded.temperature > 0.5 else history + decoded.tokens  # a shaky decode is not context
        seek += max(advance, 1)
    duration = len(audio) / WHISPER_RATE
    text = " ".join(s.text for s in segments)
    elapsed = time.perf_counter() - started
    return Transcript(text, segments, language or "en", elapsed / duration, duration, windows)


def _load(audio_or_path: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(audio_or_path, np.ndarray):
        if audio_or_path.ndim != 1 or not np.issubdtype(audio_or_path.dtype, np.floating):
            raise AudioError(
                f"transcribe takes 16-kHz mono float samples (1-D), got an array of shape {audio_or_path.shape} "
                f"and dtype {audio_or_path.dtype}; use glassformer.audio.load_audio(x, sample_rate) to convert"
            )
        audio = audio_or_path.astype(np.float32, copy=False)
        name = "the audio array"
    else:
        audio = load_audio(audio_or_path)
        name = str(audio_or_path)
    if audio.size == 0:
        raise AudioError(f"{name} holds no samples: there is nothing to transcribe")
    return audio


def _check_options(beam_size: int | None, temperatures: Sequence[float]) -> tuple[float, ...]:
    if beam_size is not None and (isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1):
        raise ValueError(f"beam_size={beam_size!r}: give a positive number of beams (5 is Whisper's), or None for greedy")
    temperatures = tuple(float(t) for t in temperatures)
    if not temperatures or any(t < 0 for t in temperatures):
        raise ValueError(f"temperatures={temperatures!r}: give one or more temperatures >= 0, e.g. (0.0, 0.2, ..., 1.0)")
    return temperatures


def _window_features(model: torch.nn.Module, audio: np.ndarray, seek: int, window_frames: int) -> Tensor:
    """``(1, n_mels, frames)`` log-mel of the window starting at frame ``seek``.

    A 30-s model gets the window padded with silence to 30 s, as it was trained; a shorter encoder
    (trained on clips at their own length) gets the samples as they are.
    """
    chunk = audio[seek * HOP_LENGTH : (seek + window_frames) * HOP_LENGTH]
    padding = window_frames * HOP_LENGTH if window_frames == WHISPER_FRAMES else None
    features = log_mel_spectrogram(torch.from_numpy(np.ascontiguousarray(chunk)), model.config.n_mels,
                                   padding_to=padding)  # fmt: skip
    weight = next(model.parameters())
    return features[None].to(device=weight.device, dtype=weight.dtype)


def _prefix(vocab: Vocabulary, history: list[int], timestamps: bool, context: int) -> list[int]:
    """``[<|startofprev|>, earlier tokens...]`` (at most half the context) + the prompt."""
    prompt = vocab.prompt(timestamps)
    if not history or vocab.start_of_prev is None:
        return prompt
    return [vocab.start_of_prev, *history[-(context // 2 - 1) :], *prompt]


def _no_speech_prob(model: torch.nn.Module, vocab: Vocabulary, state: EncoderState, prefix: list[int]) -> float:
    """Probability of the no-speech token right after ``<|startoftranscript|>``."""
    if vocab.no_speech is None:
        return math.nan
    upto = prefix[: prefix.index(vocab.sot) + 1]
    ids = torch.tensor([upto], device=state.hidden.device)
    logits = model.decode_step(ids, encoder_state=state, logits_to_keep=1).logits[0, -1]
    return float(torch.softmax(logits.float(), dim=-1)[vocab.no_speech])


def _decode_with_fallback(
    model: torch.nn.Module,
    vocab: Vocabulary,
    features: Tensor,
    prefix: list[int],
    start: float,
    *,
    quiet: bool,
    timestamps: bool,
    beam_size: int | None,
    temperatures: tuple[float, ...],
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
    seed: int,
) -> WindowDecode:
    """Decode one window at rising temperatures until the text passes both tests."""
    with torch.inference_mode():
        state = model.encode_for_generation(features)
        no_speech = _no_speech_prob(model, vocab, state, prefix)
    max_new = min(model.max_seq_len // 2, model.max_seq_len + 1 - len(prefix))
    for temperature in temperatures:
        tokens, avg_logprob = _decode_once(model, vocab, state, prefix, temperature, beam_size, timestamps, max_new, seed)
        text = vocab.text(tokens)
        decoded = WindowDecode(start, tokens, text, temperature, avg_logprob, compression_ratio(text), no_speech)
        too_repetitive = compression_ratio_threshold is not None and decoded.compression_ratio > compression_ratio_threshold
        unlikely = logprob_threshold is not None and avg_logprob < logprob_threshold
        silent = no_speech_threshold is not None and no_speech > no_speech_threshold
        if silent and (quiet or logprob_threshold is None or avg_logprob <= logprob_threshold):
            decoded.skipped = True
            return decoded
        if not (too_repetitive or unlikely):
            return decoded
    return decoded


def _decode_once(
    model: torch.nn.Module,
    vocab: Vocabulary,
    state: EncoderState,
    prefix: list[int],
    temperature: float,
    beam_size: int | None,
    timestamps: bool,
    max_new: int,
    seed: int,
) -> tuple[list[int], float]:
    """One decode of a window: its tokens (no ``<|endoftext|>``) and average log-probability."""
    rules = TimestampRules(vocab, len(prefix)) if timestamps else None
    beam = temperature == 0 and beam_size is not None and beam_size > 1
    config = GenerationConfig(
        strategy="beam" if beam else ("greedy" if temperature == 0 else "sample"),
        num_beams=beam_size if beam else 1, temperature=temperature if temperature > 0 else 1.0,
        max_new_tokens=max_new, stop_token_ids=(vocab.eot,), pad_token_id=vocab.eot, seed=seed,
        suppress_tokens=vocab.suppress, begin_suppress_tokens=vocab.begin_suppress,
    )  # fmt: skip
    tracker = None if beam else LogprobTracker(vocab.eot, rules)
    out = generate(model, state, config=config, decoder_input_ids=[prefix], logits_processor=tracker or rules)
    produced = out.tokens[0]
    tokens = produced[:-1] if produced and produced[-1] == vocab.eot else produced
    if beam:
        total = out.scores[0] * len(produced) ** config.length_penalty
    else:
        total = tracker.finish(produced)
    return tokens, total / (len(tokens) + 1)


def _segments(vocab: Vocabulary, decoded: WindowDecode, frames: int, timestamps: bool) -> tuple[list[Segment], int]:
    """A window's segments and how many frames to move on (Whisper's seeking rule)."""
    offset, window_s = decoded.start, frames / FRAMES_PER_SECOND
    tokens = decoded.tokens
    if not timestamps:
        return [Segment(offset, offset + window_s, decoded.text)], frames
    begin = vocab.timestamp_begin
    is_time = [t >= begin for t in tokens]
    single_ending = len(tokens) >= 2 and not is_time[-2] and is_time[-1]
    cuts = [i for i in range(1, len(tokens)) if is_time[i - 1] and is_time[i]]
    if not cuts:
        stamps = [t for t in tokens if t >= begin]
        end = (stamps[-1] - begin) * TIME_STEP if stamps and stamps[-1] != begin else window_s
        return [Segment(offset, offset + end, decoded.text)], frames
    if single_ending:
        cuts.append(len(tokens))
    found, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        found.append(Segment(offset + (piece[0] - begin) * TIME_STEP, offset + (piece[-1] - begin) * TIME_STEP,
                             vocab.text(piece)))  # fmt: skip
        last = cut
    advance = frames if single_ending else (tokens[last - 1] - begin) * FRAMES_PER_TIMESTAMP
    return found, advance


def load_for_transcription(source: str | Path = "tiny.en") -> tuple[torch.nn.Module, Any]:
    """A model and its tokenizer: ``"tiny.en"`` (the packaged weights) or a checkpoint folder.

    A folder with a ``tokenizer.json`` is read with Whisper's tokenizer; one without (a
    ``whisper-digits`` run of ``glassformer train``) gets the character vocabulary it was trained on.
    """
    from glassformer.models import load_model
    from glassformer.models.whisper.packaged import load_tiny_en
    from glassformer.models.whisper.tokenizer import WhisperTokenizer

    if str(source) == "tiny.en":
        return load_tiny_en()
    folder = Path(source)
    model = load_model(folder, family="whisper").eval()
    for candidate in (folder, folder.parent / "tokenizer", folder.parent):
        if (candidate / "tokenizer.json").is_file():
            return model, WhisperTokenizer.from_folder(candidate, vocab_size=model.config.vocab_size)
    from glassformer.data.speech import SpeechVocab

    vocab = SpeechVocab()
    vocab.check_model(model.config)
    return model, vocab
