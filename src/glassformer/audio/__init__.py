"""The audio front end: files to float32 mono, Whisper's log-mel features, SpecAugment, long-audio windows.

Public API (everything here is importable from ``glassformer.audio``):

Reading (``io.py``)
    ``load_audio(source, sample_rate=None, target_rate=16000) -> np.ndarray``
        WAV/FLAC/OGG path or 1-D / ``(samples, channels)`` array -> float32 mono in [-1, 1],
        channels averaged, resampled with soxr "HQ" (librosa's default). Arrays need ``sample_rate``.
    ``audio_duration(source, sample_rate=16000) -> float``  seconds, from the header for files.
    ``iter_windows(audio, window_s=30, hop_s=30, sample_rate=16000) -> Iterator[AudioWindow]``
        views of a long recording (``.index, .start, .audio, .start_s, .end_s``).
    ``AudioError(ValueError)``  every bad-input error; the message names the file and the fix.
    ``SUPPORTED_FORMATS``

Features (``features.py``)
    ``log_mel_spectrogram(audio, n_mels=80, n_fft=400, hop_length=160, padding_to=480000,
    sample_rate=16000)`` -> ``(n_mels, frames)``, numpy or torch like the input; equals
    ``WhisperFeatureExtractor`` with the default ``padding_to``; ``padding_to=None`` gives
    ``len // 160`` frames. Audio longer than ``padding_to`` is refused (use ``iter_windows``).
    ``log_mel_batch(clips, ...) -> MelBatch(features (B, n_mels, frames), lengths (B,))``
    ``iter_log_mel_windows(audio, window_s=30, hop_s=30, n_mels=80) -> Iterator[(AudioWindow, features)]``
        long recordings, one window's features at a time.
    ``pad_or_trim(audio, length=480000)``, ``mel_filters(n_mels=80, n_fft=400, sample_rate=16000)``
    (Slaney, ``(n_mels, n_fft // 2 + 1)``), ``hz_to_mel``, ``mel_to_hz``, ``N_SAMPLES``, ``HOP_LENGTH``.

Augmentation (``augment.py``)
    ``spec_augment(features, n_freq_masks=2, freq_width=27, n_time_masks=2, time_width=100,
    generator=0, mask_value=None, lengths=None) -> SpecAugmentResult(features, masks)``
    with ``masks[b]`` a list of ``Mask(axis, start, width)``.
"""

from glassformer.audio.augment import Mask, SpecAugmentResult, spec_augment
from glassformer.audio.features import (
    HOP_LENGTH,
    N_FFT,
    N_SAMPLES,
    MelBatch,
    hz_to_mel,
    iter_log_mel_windows,
    log_mel_batch,
    log_mel_spectrogram,
    mel_filters,
    mel_to_hz,
    pad_or_trim,
)
from glassformer.audio.io import (
    SUPPORTED_FORMATS,
    WHISPER_RATE,
    AudioError,
    AudioWindow,
    audio_duration,
    iter_windows,
    load_audio,
)

__all__ = [
    "HOP_LENGTH",
    "N_FFT",
    "N_SAMPLES",
    "SUPPORTED_FORMATS",
    "WHISPER_RATE",
    "AudioError",
    "AudioWindow",
    "Mask",
    "MelBatch",
    "SpecAugmentResult",
    "audio_duration",
    "hz_to_mel",
    "iter_log_mel_windows",
    "iter_windows",
    "load_audio",
    "log_mel_batch",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_to_hz",
    "pad_or_trim",
    "spec_augment",
]
