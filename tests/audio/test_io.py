"""load_audio and audio_duration: decoding, down-mixing, resampling, and every refusal named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_wav

from glassformer.audio import AudioError, audio_duration, load_audio


def _tone(freq: float, rate: int, seconds: float, amp: float) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def test_24bit_stereo_is_averaged_and_scaled(tmp_path: Path) -> None:
    """24-bit stereo written by ``wave``: the result is the channel mean over 2**23, bit for bit."""
    rng = np.random.default_rng(0)
    pcm = rng.integers(-(2**23), 2**23, size=(4000, 2))
    path = write_wav(tmp_path / "stereo.wav", pcm, 16000, sample_width=3)
    expected = (pcm.astype(np.float64) / 2**23).mean(axis=1)
    got = load_audio(path)
    assert got.dtype == np.float32 and got.shape == (4000,)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_resampling_keeps_frequency_and_level(tmp_path: Path) -> None:
    """A 440-Hz tone at 8 kHz comes out at 16 kHz with its peak still at 440 Hz and its level kept."""
    pcm = np.round(_tone(440.0, 8000, 1.0, 0.5) * 32767).astype(np.int16)
    got = load_audio(write_wav(tmp_path / "tone.wav", pcm, 8000))
    assert got.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(got * np.hanning(got.size)))
    assert np.argmax(spectrum) * 16000 / got.size == pytest.approx(440.0, abs=1.0)
    expected = _tone(440.0, 16000, 1.0, 0.5)
    np.testing.assert_allclose(got[200:-200], expected[200:-200], atol=2e-3)  # away from the edges


def test_array_input_matches_file_input(tmp_path: Path) -> None:
    pcm = np.round(_tone(300.0, 8000, 0.5, 0.3) * 32767).astype(np.int16)
    from_file = load_audio(write_wav(tmp_path / "a.wav", pcm, 8000))
    np.testing.assert_array_equal(load_audio(pcm, sample_rate=8000), from_file)
    np.testing.assert_array_equal(load_audio(pcm / 32768.0, sample_rate=8000), from_file)
    stereo = np.stack([pcm, pcm], axis=1)
    np.testing.assert_array_equal(load_audio(stereo, sample_rate=8000), from_file)


def test_jfk_reference_recording(jfk_path: Path) -> None:
    """The 44.1-kHz stereo FLAC: 11 s, float32 mono in [-1, 1], equal to soundfile + mean + soxr HQ."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    got = load_audio(jfk_path)
    assert got.dtype == np.float32 and got.shape == (176000,)
    assert np.abs(got).max() <= 1.0
    raw, rate = sf.read(str(jfk_path), dtype="float32")
    expected = soxr.resample(raw.mean(axis=1), rate, 16000, quality="HQ")
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert audio_duration(jfk_path) == pytest.approx(11.0)
    assert audio_duration(got) == pytest.approx(11.0)
    assert audio_duration(np.zeros(8000), sample_rate=8000) == 1.0


def test_same_rate_is_not_resampled(tmp_path: Path) -> None:
    pcm = np.arange(-500, 500, dtype=np.int16)
    got = load_audio(write_wav(tmp_path / "x.wav", pcm, 16000))
    np.testing.assert_array_equal(got, pcm / np.float32(32768))


# ---- refusals: each names the problem and the file -------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"not found: .*nope\.wav"):
        load_audio(tmp_path / "nope.wav")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty \(0 bytes\): .*empty\.flac"):
        load_audio(tmp_path / "empty.flac")


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x01garbage" * 40)
    with pytest.raises(AudioError, match=r"corrupt or not really WAV: .*bad\.wav"):
        load_audio(tmp_path / "bad.wav")


def test_unsupported_suffix_lists_the_supported_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not audio at all\n" * 10)
    with pytest.raises(AudioError, match=r"unsupported audio format '\.txt'.*WAV, FLAC, OGG"):
        load_audio(tmp_path / "notes.txt")


def test_unsupported_container_even_if_decodable(tmp_path: Path) -> None:
    """An AIFF file libsndfile could read is still refused: the promise is WAV, FLAC and OGG."""
    sf = pytest.importorskip("soundfile")
    path = tmp_path / "clip.aiff"
    sf.write(str(path), np.zeros(800, dtype=np.float32), 8000, format="AIFF")
    with pytest.raises(AudioError, match=r"unsupported audio format AIFF .*clip\.aiff.*WAV, FLAC, OGG"):
        load_audio(path)


def test_zero_samples(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silent.wav", np.zeros(0, dtype=np.int16), 16000)
    with pytest.raises(AudioError, match=r"zero samples: .*silent\.wav"):
        load_audio(path)
    with pytest.raises(AudioError, match="zero samples"):
        load_audio(np.zeros(0, dtype=np.float32), sample_rate=16000)


def test_folder_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="folder"):
        load_audio(tmp_path)


def test_file_rate_mismatch(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "a.wav", np.zeros(100, dtype=np.int16), 8000)
    with pytest.raises(AudioError, match=r"sampled at 8000 Hz, not the sample_rate=16000"):
        load_audio(path, sample_rate=16000)


@pytest.mark.parametrize(
    ("array", "rate", "message"),
    [
        (np.zeros(10, dtype=np.float32), None, r"no sample rate: pass sample_rate"),
        (np.zeros((2, 1000), dtype=np.float32), 8000, r"more channels \(1000\) than samples \(2\).*array\.T"),
        (np.zeros((4, 2, 2), dtype=np.float32), 8000, r"1-D or \(samples, channels\)"),
        (np.full(10, 3.0), 8000, r"peak is 3.*divide by 32768"),
        (np.array([0.0, np.nan]), 8000, "NaN or infinity"),
        (np.array(["a", "b"]), 8000, "integer PCM or floats"),
        (np.zeros(10, dtype=np.float32), 0, "positive whole number"),
        (np.zeros(10, dtype=np.float32), 44.1, "positive whole number"),
    ],
)
def test_bad_arrays(array: np.ndarray, rate: int | None, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        load_audio(array, sample_rate=rate)


def test_not_a_path_or_array() -> None:
    with pytest.raises(AudioError, match="file path or a numpy array, not list"):
        load_audio([0.0, 0.1], sample_rate=16000)  # type: ignore[arg-type]


def test_audio_error_is_a_value_error() -> None:
    assert issubclass(AudioError, ValueError)
