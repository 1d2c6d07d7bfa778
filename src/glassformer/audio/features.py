"""Whisper's log-mel spectrogram, written out so each step can be read and checked.

The recipe (Radford et al. 2022, ``whisper/audio.py``), for 16-kHz mono audio:

1. pad with zeros (or cut) to 30 s = 480,000 samples, so every input is 3,000 frames;
2. STFT with a 400-sample periodic Hann window every 160 samples (25 ms / 10 ms), centred frames
   with reflect padding, as ``torch.stft(center=True)`` does; the last frame is dropped, so N
   samples give ``N // 160`` frames;
3. power spectrum ``|X|^2`` through 80 (or 128) Slaney-style triangular mel filters, 0..8 kHz;
4. ``log10`` of ``max(mel, 1e-10)``, floored at 8 (80 dB) below the clip's maximum, then
   ``(x + 4) / 4`` so the values sit around [-1, 1].

The floor is per clip: a batch is computed clip by clip in effect, and the features of one clip
never depend on its batch mates. ``padding_to=None`` skips step 1, for models trained on short
clips (1-s spoken digits give 100 frames).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from glassformer.audio.io import WHISPER_RATE, AudioError, AudioWindow, iter_windows

N_SAMPLES = 30 * WHISPER_RATE  # Whisper's 30-s window
HOP_LENGTH = 160
N_FFT = 400
LOG_FLOOR_DB = 8.0  # in log10 units: 80 dB below the clip's loudest mel bin

Audio = TypeVar("Audio", np.ndarray, torch.Tensor)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (the Auditory Toolbox's, librosa's default): linear to 1 kHz, log above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0  # 200/3 Hz per mel below 1 kHz, so 1 kHz is mel 15
    log_part = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0)), mel * 200.0 / 3.0)


@functools.lru_cache(maxsize=8)
def mel_filters(
    n_mels: int = 80,
    n_fft: int = N_FFT,
    sample_rate: int = WHISPER_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """The ``(n_mels, n_fft // 2 + 1)`` Slaney mel filter bank Whisper uses (librosa's ``filters.mel``).

    Filter ``m`` is a triangle over FFT-bin frequencies rising from mel point ``m`` to ``m + 1`` and
    falling to ``m + 2``, the ``n_mels + 2`` points evenly spaced in mel between ``f_min`` and
    ``f_max`` (default: Nyquist). Each triangle is scaled by ``2 / (right - left)`` Hz ("Slaney"
    area normalisation), so wide high-frequency filters do not outweigh narrow low ones. The array
    is cached and read-only; copy it to change it.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not (0 <= f_min < f_max <= sample_rate / 2):
        raise AudioError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max} "
            f"at {sample_rate} Hz"
        )
    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    points_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    left, centre, right = points_hz[:-2, None], points_hz[1:-1, None], points_hz[2:, None]
    rising = (fft_hz - left) / (centre - left)
    falling = (right - fft_hz) / (right - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    bank = (triangles * (2.0 / (right - left))).astype(np.float32)
    bank.flags.writeable = False
    return bank


def pad_or_trim(audio: Audio, length: int = N_SAMPLES) -> Audio:
    """``audio`` cut or zero-padded along its last axis to exactly ``length`` samples (Whisper's rule)."""
    if length < 1:
        raise AudioError(f"pad_or_trim needs a length of at least 1 sample, got {length}")
    n = audio.shape[-1]
    if n >= length:
        return audio[..., :length]
    if isinstance(audio, torch.Tensor):
        return torch.nn.functional.pad(audio, (0, length - n))
    widths = [(0, 0)] * (audio.ndim - 1) + [(0, length - n)]
    return np.pad(audio, widths)


def log_mel_spectrogram(
    audio: Audio,
    n_mels: int = 80,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    padding_to: int | None = N_SAMPLES,
    sample_rate: int = WHISPER_RATE,
) -> Audio:
    """Whisper's ``(n_mels, frames)`` log-mel features of 1-D audio, as numpy or torch like the input.

    With ``padding_to`` (default 30 s) the audio is zero-padded to that many samples and the
    result has ``padding_to // hop_length`` frames; audio longer than that is refused rather than
    silently cut: use :func:`~glassformer.audio.io.iter_windows` for long recordings, or
    :func:`pad_or_trim` to cut on purpose. With ``padding_to=None`` the frames are
    ``len(audio) // hop_length``. A torch input stays on its device.
    """
    waveform = _as_waveform(audio)
    if waveform.dim() != 1:
        raise AudioError(
            f"log_mel_spectrogram takes 1-D mono audio, got shape {tuple(waveform.shape)}: "
            "use log_mel_batch for several clips, load_audio to down-mix channels"
        )
    waveform = _fit_length(waveform, padding_to, n_fft, hop_length, sample_rate)
    features = _log_mel(waveform[None], n_mels, n_fft, hop_length, sample_rate)[0]
    return features if isinstance(audio, torch.Tensor) else features.cpu().numpy()


def iter_log_mel_windows(
    audio: np.ndarray, window_s: float = 30.0, hop_s: float = 30.0, n_mels: int = 80
) -> Iterator[tuple[AudioWindow, np.ndarray]]:
    """Each window of a long 16-kHz recording with its ``(n_mels, window_s * 100)`` features, one at a time.

    Only the current window's spectrogram exists while the caller handles it, so a 10-minute (or
    10-hour) recording costs what one 30-s clip does; the last, shorter window is zero-padded.
    """
    padding_to = round(window_s * WHISPER_RATE)
    for window in iter_windows(audio, window_s=window_s, hop_s=hop_s, sample_rate=WHISPER_RATE):
        yield window, log_mel_spectrogram(window.audio, n_mels=n_mels, padding_to=padding_to)


@dataclass(frozen=True)
class MelBatch:
    """Log-mel features of several clips: ``features`` is ``(B, n_mels, frames)``; ``lengths[b]`` counts
    clip ``b``'s frames that hold its audio (the rest is padding)."""

    features: torch.Tensor
    lengths: torch.Tensor


def log_mel_batch(
    clips: Sequence[np.ndarray | torch.Tensor],
    n_mels: int = 80,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    padding_to: int | None = N_SAMPLES,
    sample_rate: int = WHISPER_RATE,
) -> MelBatch:
    """Features of several 1-D clips in one batch, each clip exactly as :func:`log_mel_spectrogram` gives it.

    With ``padding_to`` every clip has the same frames and ``lengths`` are the frames whose centre
    falls inside the clip, ``ceil(len / hop_length)`` capped at the frame count (what
    ``WhisperFeatureExtractor``'s ``attention_mask`` counts). With ``padding_to=None`` each clip
    keeps its own ``len // hop_length`` frames, and shorter ones are padded on the right with
    their own floor value, the silence level of that clip's scale, so padding looks like silence.
    """
    if len(clips) == 0:
        raise AudioError("log_mel_batch got no clips: pass a non-empty list of 1-D arrays")
    waveforms = [_as_waveform(clip) for clip in clips]
    for i, waveform in enumerate(waveforms):
        if waveform.dim() != 1:
            raise AudioError(f"clip {i} has shape {tuple(waveform.shape)}; each clip must be 1-D mono audio")
    if padding_to is not None:
        stacked = torch.stack([_fit_length(w, padding_to, n_fft, hop_length, sample_rate) for w in waveforms])
        features = _log_mel(stacked, n_mels, n_fft, hop_length, sample_rate)
        frames = features.shape[-1]
        lengths = torch.tensor([min(-(-w.shape[0] // hop_length), frames) for w in waveforms])
        return MelBatch(features, lengths)
    singles = [
        _log_mel(
            _fit_length(w, None, n_fft, hop_length, sample_rate)[None], n_mels, n_fft, hop_length, sample_rate
        )[0]
        for w in waveforms
    ]
    lengths = torch.tensor([s.shape[-1] for s in singles])
    longest = int(lengths.max())
    padded = [torch.nn.functional.pad(s, (0, longest - s.shape[-1]), value=float(s.min())) for s in singles]
    return MelBatch(torch.stack(padded), lengths)


def _as_waveform(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor view of the audio (numpy arrays are shared, not copied, when already float32)."""
    if not isinstance(audio, (np.ndarray, torch.Tensor)):
        raise AudioError(f"audio must be a numpy array or a torch tensor, not {type(audio).__name__}")
    if isinstance(audio, np.ndarray):
        floating = np.issubdtype(audio.dtype, np.floating)
    else:
        floating = audio.is_floating_point()
    if not floating:
        raise AudioError(
            f"audio must be float samples in [-1, 1], got {audio.dtype}: read files with load_audio"
        )
    if isinstance(audio, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    return audio.to(torch.float32)


def _fit_length(
    waveform: torch.Tensor, padding_to: int | None, n_fft: int, hop_length: int, sample_rate: int
) -> torch.Tensor:
    """Pad to ``padding_to``, refusing longer audio; or, unpadded, check the STFT can reflect-pad it."""
    n = waveform.shape[0]
    if padding_to is None:
        if n <= n_fft // 2 or n < hop_length:
            raise AudioError(
                f"audio of {n} samples is too short for unpadded features: it needs more than "
                f"{max(n_fft // 2, hop_length - 1)} samples; pass padding_to=... to zero-pad it"
            )
        return waveform
    if n > padding_to:
        raise AudioError(
            f"audio of {n / sample_rate:.1f} s is longer than padding_to={padding_to} samples "
            f"({padding_to / sample_rate:.1f} s): split it with iter_windows(audio), or cut it "
            "on purpose with pad_or_trim(audio, padding_to)"
        )
    return pad_or_trim(waveform, padding_to)


def _log_mel(
    waveforms: torch.Tensor, n_mels: int, n_fft: int, hop_length: int, sample_rate: int
) -> torch.Tensor:
    """``(B, samples) -> (B, n_mels, frames)``: steps 2-4 of the module docstring, floor per clip."""
    window = torch.hann_window(n_fft, device=waveforms.device)
    stft = torch.stft(
        waveforms, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = stft[..., :-1].abs().square().contiguous()  # contiguous: the strided matmul is much slower
    bank = torch.from_numpy(mel_filters(n_mels, n_fft, sample_rate).copy()).to(waveforms.device)
    log_spec = torch.clamp(bank @ power, min=1e-10).log10()
    peak = log_spec.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(log_spec, peak - LOG_FLOOR_DB) + 4.0) / 4.0
