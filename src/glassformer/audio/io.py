"""Reading speech audio into the one shape every feature function expects: float32 mono in [-1, 1].

Files are read with ``soundfile`` (libsndfile) and resampled with ``soxr`` at quality ``"HQ"``.
That is the resampler ``librosa.load`` uses by default (``res_type="soxr_hq"``), and so what
Hugging Face ``datasets``' ``Audio(sampling_rate=16000)`` column hands to ``WhisperFeatureExtractor``:
features computed here from a 44.1-kHz file match what users of that pipeline see. Channels are
averaged *before* resampling: both steps are linear, so the order does not change the result, and
down-mixing first resamples one channel instead of several.

Every problem with the input raises :class:`AudioError` (a ``ValueError``) naming the file or the
array and saying what to do about it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from soundfile import _SoundFileInfo

# libsndfile's container names (``soundfile.info(path).format``) that count as supported, and the
# file suffixes that name them. WAVEX is WAV with a channel mask; RF64 is WAV past 4 GiB.
SUPPORTED_FORMATS: dict[str, str] = {
    "WAV": "WAV",
    "WAVEX": "WAV",
    "RF64": "WAV",
    "FLAC": "FLAC",
    "OGG": "OGG",
}
SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".wav", ".flac", ".ogg"})
_SUPPORTED_TEXT = "WAV, FLAC, OGG"
RESAMPLE_QUALITY = "HQ"
WHISPER_RATE = 16000


class AudioError(ValueError):
    """Audio that cannot be read or used, with the file or array named and the fix in the message."""


AudioSource = str | Path | np.ndarray


def load_audio(
    source: AudioSource, sample_rate: int | None = None, target_rate: int = WHISPER_RATE
) -> np.ndarray:
    """Float32 mono samples in [-1, 1] at ``target_rate``, from a file path or an array.

    A path is decoded with soundfile; ``sample_rate`` may be left out (the file says it) or must
    match the file. An array is 1-D (mono) or ``(samples, channels)``, as soundfile returns it, and
    needs ``sample_rate``. Integer arrays are PCM and are scaled by their type's range; float arrays
    must already be in [-1, 1]. The result is clipped to [-1, 1] because resampling can ring a hair
    past full scale on clipped input.
    """
    _check_rate(target_rate, "target_rate")
    if isinstance(source, np.ndarray):
        if sample_rate is None:
            raise AudioError(
                "an audio array has no sample rate: pass sample_rate=..., e.g. load_audio(x, 8000)"
            )
        _check_rate(sample_rate, "sample_rate")
        samples, rate = _array_to_float(source), sample_rate
        name = f"the array of shape {source.shape}"
    elif isinstance(source, (str, Path)):
        samples, rate = _read_file(Path(source), sample_rate)
        name = str(source)
    else:
        raise AudioError(f"load_audio takes a file path or a numpy array, not {type(source).__name__}")
    mono = _downmix(samples, name)
    if rate != target_rate:
        mono = (
            _optional("soxr")
            .resample(mono, rate, target_rate, quality=RESAMPLE_QUALITY)
            .astype(np.float32, copy=False)
        )
    return np.clip(mono, -1.0, 1.0, out=mono)


def audio_duration(source: AudioSource, sample_rate: int = WHISPER_RATE) -> float:
    """Seconds of audio: from a file's header (nothing is decoded), or ``len(array) / sample_rate``."""
    if isinstance(source, np.ndarray):
        _check_rate(sample_rate, "sample_rate")
        return source.shape[0] / sample_rate
    info = _file_info(Path(source))
    return info.frames / info.samplerate


@dataclass(frozen=True)
class AudioWindow:
    """One stretch of a long recording: ``audio`` is a view into it, starting ``start`` samples in."""

    index: int
    start: int
    audio: np.ndarray
    sample_rate: int

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return (self.start + self.audio.shape[-1]) / self.sample_rate


def iter_windows(
    audio: np.ndarray, window_s: float = 30.0, hop_s: float = 30.0, sample_rate: int = WHISPER_RATE
) -> Iterator[AudioWindow]:
    """Consecutive ``window_s``-second views of ``audio``, ``hop_s`` seconds apart, the last one shorter.

    This is how a long recording (a 10-minute meeting) reaches a 30-s model: each window is a view,
    not a copy, so only one window's features exist at a time when the caller computes them inside
    the loop. Windows stop once one reaches the end, so overlapping hops add no tail-only window.
    """
    _check_rate(sample_rate, "sample_rate")
    if not (0 < hop_s <= window_s):
        raise AudioError(
            f"need 0 < hop_s <= window_s, got hop_s={hop_s}, window_s={window_s}: a hop longer "
            "than the window would skip audio"
        )
    if audio.ndim != 1:
        raise AudioError(
            f"iter_windows takes 1-D mono audio, got shape {audio.shape}: load it with load_audio"
        )
    window, hop = round(window_s * sample_rate), round(hop_s * sample_rate)
    if window < 1 or hop < 1:
        raise AudioError(
            f"window_s={window_s} and hop_s={hop_s} must each be at least one sample at {sample_rate} Hz"
        )
    start, index = 0, 0
    while True:
        yield AudioWindow(index, start, audio[start : start + window], sample_rate)
        if start + window >= audio.shape[0]:
            return
        start, index = start + hop, index + 1


def _check_rate(rate: object, name: str) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise AudioError(f"{name} must be a positive whole number of Hz, got {rate!r}")


def _optional(name: str) -> ModuleType:
    """soundfile or soxr, imported on first use so the feature code works without either installed."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise AudioError(
            f"reading and resampling audio needs the {name!r} package: "
            "pip install soundfile soxr (both are in glassformer's dev extra)"
        ) from err


def _file_info(path: Path) -> _SoundFileInfo:
    """The header of a supported, non-empty audio file, or an AudioError saying which check failed."""
    sf = _optional("soundfile")
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioError(f"not an audio file but a {'folder' if path.is_dir() else 'special file'}: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise AudioError(
                f"unsupported audio format {suffix or '(no suffix)'!r} for {path}: "
                f"supported formats are {_SUPPORTED_TEXT}; convert it, e.g. "
                f"ffmpeg -i {path.name} {path.stem}.wav"
            ) from err
        raise AudioError(f"audio file is corrupt or not really {suffix[1:].upper()}: {path} ({err})") from err
    if info.format not in SUPPORTED_FORMATS:
        raise AudioError(
            f"unsupported audio format {info.format} ({info.format_info}) in {path}: supported "
            f"formats are {_SUPPORTED_TEXT}; convert it, e.g. ffmpeg -i {path.name} {path.stem}.wav"
        )
    return info


def _read_file(path: Path, sample_rate: int | None) -> tuple[np.ndarray, int]:
    info = _file_info(path)
    sf = _optional("soundfile")
    if sample_rate is not None and sample_rate != info.samplerate:
        raise AudioError(
            f"{path} is sampled at {info.samplerate} Hz, not the sample_rate={sample_rate} given: "
            "leave sample_rate out for files (target_rate sets the output rate)"
        )
    try:
        samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(
            f"audio file is corrupt (its header reads but its samples do not): {path} ({err})"
        ) from err
    if samples.shape[0] == 0:
        raise AudioError(f"audio file has zero samples: {path}")
    return samples, rate


def _array_to_float(array: np.ndarray) -> np.ndarray:
    """Float32 samples from an integer PCM array (scaled to [-1, 1)) or a float array already there."""
    if array.ndim not in (1, 2):
        raise AudioError(f"an audio array is 1-D or (samples, channels), got shape {array.shape}")
    if array.shape[0] == 0:
        raise AudioError(f"the audio array of shape {array.shape} has zero samples")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        return (array.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    if not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"audio arrays hold integer PCM or floats, not {array.dtype}")
    samples = array.astype(np.float32)
    if not np.isfinite(samples).all():
        raise AudioError("the audio array holds NaN or infinity: check the code that produced it")
    peak = float(np.abs(samples).max())
    if peak > 1.0:
        raise AudioError(
            f"float audio must lie in [-1, 1], but its peak is {peak:g}: integer PCM stored as float "
            "needs scaling (int16: divide by 32768), or pass the integer array itself"
        )
    return samples


def _downmix(samples: np.ndarray, name: str) -> np.ndarray:
    """The channel average as a contiguous 1-D float32 array."""
    if samples.ndim == 1:
        return np.ascontiguousarray(samples, dtype=np.float32)
    if samples.shape[1] > samples.shape[0]:
        raise AudioError(
            f"{name} has more channels ({samples.shape[1]}) than samples ({samples.shape[0]}): "
            "arrays are (samples, channels); pass array.T if yours is (channels, samples)"
        )
    return np.ascontiguousarray(samples.mean(axis=1, dtype=np.float32))
