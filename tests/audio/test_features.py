"""Whisper's log-mel features against transformers' WhisperFeatureExtractor, and checks of each step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer.audio import (
    AudioError,
    hz_to_mel,
    load_audio,
    log_mel_batch,
    log_mel_spectrogram,
    mel_filters,
    mel_to_hz,
    pad_or_trim,
)

TOL = 1e-5


def _reference(extractor, audio, **kwargs) -> np.ndarray:
    return extractor(audio, sampling_rate=16000, return_tensors="np", **kwargs).input_features


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, round(16000 * seconds)).astype(np.float32)


def test_jfk_matches_whisper_feature_extractor(jfk_path: Path, whisper_extractor) -> None:
    audio = load_audio(jfk_path)
    ours = log_mel_spectrogram(audio)
    assert isinstance(ours, np.ndarray) and ours.shape == (80, 3000) and ours.dtype == np.float32
    assert np.abs(ours - _reference(whisper_extractor, audio)[0]).max() < TOL


def test_fsdd_digits_match(fsdd_paths: list[Path], whisper_extractor) -> None:
    for path in fsdd_paths:
        audio = load_audio(path)  # 8 kHz -> 16 kHz
        diff = np.abs(log_mel_spectrogram(audio) - _reference(whisper_extractor, audio)[0]).max()
        assert diff < TOL, path.name


def test_short_audio_matches(whisper_extractor) -> None:
    audio = _noise(0.1)
    assert np.abs(log_mel_spectrogram(audio) - _reference(whisper_extractor, audio)[0]).max() < TOL


def test_numpy_reference_path(jfk_path: Path, whisper_extractor) -> None:
    """transformers' NumPy extractor, a second STFT (no torch.stft), agrees as well.

    It works in float64, we in float32 as Whisper does: the quietest bins above the floor differ by
    up to ~1.6e-5 on this clip, hence the looser bound here.
    """
    audio = pad_or_trim(load_audio(jfk_path))
    reference = whisper_extractor._np_extract_fbank_features(audio[None], "cpu")[0]
    assert np.abs(log_mel_spectrogram(audio) - reference).max() < 5e-5


def test_128_mels_match_large_v3(whisper_extractor) -> None:
    from transformers import WhisperFeatureExtractor

    audio = _noise(2.0, seed=3)
    reference = _reference(WhisperFeatureExtractor(feature_size=128), audio)[0]
    ours = log_mel_spectrogram(audio, n_mels=128)
    assert ours.shape == (128, 3000) and np.abs(ours - reference).max() < TOL


def test_batch_matches_and_lengths_are_the_attention_mask(jfk_path: Path, whisper_extractor) -> None:
    clips = [load_audio(jfk_path), _noise(0.1), _noise(1.234, seed=1)]
    reference = whisper_extractor(clips, sampling_rate=16000, return_tensors="np", return_attention_mask=True)
    batch = log_mel_batch(clips)
    assert batch.features.shape == (3, 80, 3000)
    assert np.abs(batch.features.numpy() - reference.input_features).max() < TOL
    assert batch.lengths.tolist() == reference.attention_mask.sum(axis=1).tolist() == [1100, 10, 124]


def test_unpadded_frames_match_no_padding_reference(fsdd_paths: list[Path], whisper_extractor) -> None:
    """``padding_to=None``: ``len // 160`` frames, as the extractor gives with ``padding="longest"``."""
    audio = load_audio(fsdd_paths[0])
    ours = log_mel_spectrogram(audio, padding_to=None)
    assert ours.shape == (80, audio.size // 160)
    reference = _reference(whisper_extractor, audio, padding="longest")[0]
    assert reference.shape == ours.shape and np.abs(ours - reference).max() < TOL


def test_unpadded_batch_keeps_each_clip_and_pads_with_its_floor() -> None:
    clips = [_noise(1.0), _noise(0.5, seed=1), _noise(0.73, seed=2)]
    batch = log_mel_batch(clips, padding_to=None)
    assert batch.features.shape == (3, 80, 100) and batch.lengths.tolist() == [100, 50, 73]
    for clip, features, length in zip(clips, batch.features, batch.lengths):
        single = log_mel_spectrogram(torch.from_numpy(clip), padding_to=None)
        assert torch.equal(features[:, :length], single)
        assert (features[:, length:] == single.min()).all()


def test_torch_in_torch_out() -> None:
    audio = _noise(0.3)
    out = log_mel_spectrogram(torch.from_numpy(audio).double(), padding_to=None)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (80, 30)
    np.testing.assert_array_equal(out.numpy(), log_mel_spectrogram(audio, padding_to=None))


def test_floor_is_eight_below_the_peak_and_scaled() -> None:
    """Silence after a loud burst sits exactly at the floor: (peak - 8 + 4) / 4, i.e. peak - 2."""
    audio = np.zeros(16000, dtype=np.float32)
    audio[:4000] = _noise(0.25)
    features = log_mel_spectrogram(audio, padding_to=None)
    assert features.min() == pytest.approx(features.max() - 2.0, abs=1e-6)
    assert (features[:, -10:] == features.min()).all()


def test_filter_bank_matches_transformers_slaney() -> None:
    from transformers.audio_utils import mel_filter_bank

    for n_mels in (80, 128):
        reference = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
        assert np.abs(mel_filters(n_mels) - reference.T).max() < 1e-8


def test_filter_bank_shape_and_slaney_scale() -> None:
    """Checks without any reference library: the scale's fixed points, inverse, and the area norm."""
    assert hz_to_mel(1000.0) == pytest.approx(15.0) and hz_to_mel(200.0) == pytest.approx(3.0)
    hz = np.array([0.0, 60.0, 999.0, 1000.0, 4321.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, atol=1e-9)
    bank = mel_filters()
    assert bank.shape == (80, 201) and not bank.flags.writeable and (bank >= 0).all()
    points = mel_to_hz(np.linspace(0.0, hz_to_mel(8000.0), 82))
    # a triangle of height 2 / (right - left) over a fine grid integrates to 1 Hz^-1 * Hz = 1
    fine = np.linspace(0.0, 8000.0, 160001)
    for m in (0, 40, 79):
        left, centre, right = points[m : m + 3]
        tri = np.clip(np.minimum((fine - left) / (centre - left), (right - fine) / (right - centre)), 0, None)
        assert np.trapezoid(tri * 2 / (right - left), fine) == pytest.approx(1.0, rel=1e-3)


def test_pad_or_trim_numpy_and_torch() -> None:
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(x, 8), [0, 1, 2, 3, 4, 0, 0, 0])
    np.testing.assert_array_equal(pad_or_trim(x, 3), [0, 1, 2])
    t = pad_or_trim(torch.ones(2, 3), 5)
    assert t.shape == (2, 5) and t[:, 3:].abs().sum() == 0


def test_long_audio_is_refused_not_cut() -> None:
    with pytest.raises(AudioError, match=r"31\.0 s is longer than padding_to=480000.*iter_windows"):
        log_mel_spectrogram(np.zeros(16000 * 31, dtype=np.float32))


@pytest.mark.parametrize(
    ("audio", "kwargs", "message"),
    [
        (np.zeros(150, dtype=np.float32), {"padding_to": None}, r"150 samples is too short.*padding_to"),
        (np.zeros((2, 1600), dtype=np.float32), {}, r"1-D mono audio.*log_mel_batch"),
        (np.zeros(1600, dtype=np.int16), {}, r"float samples.*load_audio"),
        ([0.0] * 1600, {}, "numpy array or a torch tensor, not list"),
    ],
)
def test_bad_feature_input(audio, kwargs, message) -> None:
    with pytest.raises(AudioError, match=message):
        log_mel_spectrogram(audio, **kwargs)


def test_bad_batch_input() -> None:
    with pytest.raises(AudioError, match="no clips"):
        log_mel_batch([])
    with pytest.raises(AudioError, match=r"clip 1 has shape \(2, 400\)"):
        log_mel_batch([np.zeros(400, np.float32), np.zeros((2, 400), np.float32)])
