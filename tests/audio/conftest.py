"""Shared audio for the front-end tests: the staged recordings, the reference extractor, a WAV writer.

The WAV writer uses the standard library's ``wave`` module, not soundfile, so reading tests check
soundfile-backed code against bytes produced independently of it.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from glassformer.utils.paths import data_file

FSDD_NAMES = ("0_jackson_0.wav", "3_theo_17.wav", "7_nicolas_42.wav", "9_yweweler_49.wav")


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    path = data_file("whisper_samples", "jfk.flac")
    if path is None:
        pytest.skip("../shared/data/whisper_samples/jfk.flac is not available")
    return path


@pytest.fixture(scope="session")
def fsdd_paths() -> list[Path]:
    paths = [data_file("fsdd", "recordings", name) for name in FSDD_NAMES]
    if any(p is None for p in paths):
        pytest.skip("../shared/data/fsdd/recordings is not available")
    return paths


@pytest.fixture(scope="session")
def whisper_extractor():
    transformers = pytest.importorskip("transformers")
    return transformers.WhisperFeatureExtractor()


def write_wav(path: Path, pcm: np.ndarray, rate: int, sample_width: int = 2) -> Path:
    """Write integer PCM, ``(samples,)`` or ``(samples, channels)``, as a little-endian WAV file."""
    frames = pcm[:, None] if pcm.ndim == 1 else pcm
    raw = frames.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :sample_width].tobytes()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(frames.shape[1])
        out.setsampwidth(sample_width)
        out.setframerate(rate)
        out.writeframes(raw)
    return path
