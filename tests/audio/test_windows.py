"""Long recordings: 30-s windows as views, and features of a 10-minute clip computed window by window."""

from __future__ import annotations

import numpy as np
import pytest

from glassformer.audio import (
    AudioError,
    audio_duration,
    iter_log_mel_windows,
    iter_windows,
    log_mel_spectrogram,
)


def test_ten_minutes_in_thirty_second_views() -> None:
    audio = np.random.default_rng(0).uniform(-0.1, 0.1, 16000 * 600 + 8000).astype(np.float32)
    assert audio_duration(audio) == pytest.approx(600.5)
    windows = list(iter_windows(audio))
    assert len(windows) == 21
    assert [w.start for w in windows] == [i * 480000 for i in range(21)]
    assert all(np.shares_memory(w.audio, audio) for w in windows)  # views: no copy of the recording
    assert windows[-1].audio.size == 8000 and windows[-1].end_s == pytest.approx(600.5)
    np.testing.assert_array_equal(np.concatenate([w.audio for w in windows]), audio)


def test_features_per_window_match_a_direct_call() -> None:
    """Each window is a normal 30-s input; the last, short one is zero-padded like any short clip."""
    audio = np.random.default_rng(1).uniform(-0.1, 0.1, 16000 * 65).astype(np.float32)
    shapes = []
    for window in iter_windows(audio):
        features = log_mel_spectrogram(window.audio)
        shapes.append(features.shape)
        expected = log_mel_spectrogram(audio[window.start : window.start + 480000].copy())
        np.testing.assert_array_equal(features, expected)
    assert shapes == [(80, 3000)] * 3
    with pytest.raises(AudioError, match="iter_windows"):
        log_mel_spectrogram(audio)


def test_ten_minute_features_one_window_at_a_time() -> None:
    """All 20 windows of 10 minutes, each (80, 3000), and each yielded before the next is computed."""
    audio = np.random.default_rng(2).uniform(-0.1, 0.1, 16000 * 600).astype(np.float32)
    stream = iter_log_mel_windows(audio)
    first_window, first = next(stream)  # a generator: nothing beyond the first window exists yet
    assert first_window.index == 0 and first.shape == (80, 3000)
    rest = [(w.index, f.shape) for w, f in stream]
    assert rest == [(i, (80, 3000)) for i in range(1, 20)]


def test_overlapping_hops_cover_without_a_tail_only_window() -> None:
    audio = np.zeros(16000 * 70, dtype=np.float32)
    windows = list(iter_windows(audio, window_s=30, hop_s=20))
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 30), (20, 50), (40, 70)]
    short = list(iter_windows(np.zeros(100, dtype=np.float32)))
    assert len(short) == 1 and short[0].audio.size == 100


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hop_s": 40}, "hop_s <= window_s"),
        ({"hop_s": 0}, "0 < hop_s"),
        ({"window_s": 1e-6, "hop_s": 1e-6}, "at least one sample"),
        ({"sample_rate": -1}, "positive whole number"),
    ],
)
def test_bad_window_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        next(iter_windows(np.zeros(1000, dtype=np.float32), **kwargs))


def test_windows_need_mono() -> None:
    with pytest.raises(AudioError, match="1-D mono audio"):
        next(iter_windows(np.zeros((1000, 2), dtype=np.float32)))
