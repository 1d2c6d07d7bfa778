"""Speech pictures: DTW on a known cost, alignment shapes on a small random Whisper, PNGs written;
and on tiny.en (when installed) the alignment heads put jfk's words in order at sensible times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.models.whisper import Whisper, packaged
from glassformer.models.whisper.config import tiny, whisper_tiny_en
from glassformer.utils.paths import data_file
from glassformer.viz.speech import (
    align_tokens,
    alignment_heads,
    cross_attention,
    dtw_path,
    plot_spectrogram_tokens,
    plot_token_attention,
)

JFK = data_file("whisper_samples", "jfk.flac")


class _Chars:
    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def test_dtw_follows_the_cheap_cells() -> None:
    cost = np.ones((3, 6))
    cost[0, :2] = cost[1, 2:4] = cost[2, 4:] = 0.0
    rows, cols = dtw_path(cost)
    assert rows.tolist() == [0, 0, 1, 1, 2, 2] and cols.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.all(np.diff(rows) >= 0) and np.all(np.diff(cols) >= 0)


def test_alignment_shapes_and_pictures(tmp_path) -> None:
    torch.manual_seed(0)
    model = Whisper(tiny(whisper_tiny_en())).eval()  # 2 decoder layers, 2 heads, 16 positions (32 frames)
    features = torch.randn(model.config.n_mels, 32)
    layers = cross_attention(model, features, [63, 5, 6, 7])
    assert len(layers) == 2 and tuple(layers[0].shape) == (2, 4, 16)
    torch.testing.assert_close(layers[1].sum(-1), torch.ones(2, 4))  # each token's weights over the audio sum to 1
    alignment = align_tokens(model, _Chars(), features, [63], [5, 6, 7], [(1, 0), (1, 1)], duration=0.2)
    assert alignment.weights.shape == (3, 10) and alignment.texts == ["f", "g", "h"]
    assert np.all(np.diff(alignment.starts) >= 0) and np.all(alignment.ends > alignment.starts)
    spec = plot_spectrogram_tokens(features, alignment, tmp_path / "spec.png", duration=0.3)
    att = plot_token_attention(alignment, tmp_path / "att.png")
    for path in (spec, att):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000
    with pytest.raises(ValueError, match=r"alignment head \(5, 0\) is not in this model"):
        align_tokens(model, _Chars(), features, [63], [5], [(5, 0)], duration=0.2)


@pytest.mark.skipif(not packaged.packaged_tiny_en_available() or JFK is None,
                    reason="Whisper tiny.en weights absent (run `make whisper-weights`) or jfk.flac missing")
def test_tiny_en_alignment_heads_time_jfk(tmp_path) -> None:
    from glassformer.audio import load_audio, log_mel_spectrogram

    model, tokenizer = packaged.load_tiny_en()
    heads = alignment_heads(packaged.packaged_tiny_en_path() / "config.json")
    assert heads[0] == (1, 0) and len(heads) == 8
    features = torch.from_numpy(log_mel_spectrogram(load_audio(JFK)))
    words = tokenizer.encode(" And so my fellow Americans, ask not what your country can do for you")
    alignment = align_tokens(model, tokenizer, features, tokenizer.sot_sequence(), words, heads, duration=11.0)
    start = dict(zip((t.strip() for t in alignment.texts), alignment.starts, strict=False))
    assert start["so"] < start["fellow"] < start["ask"] < start["country"] < 11.0
    assert 3.0 < start["ask"] < 4.8  # "ask not" begins near 3.9 s in the recording
    assert plot_token_attention(alignment, tmp_path / "jfk.png").is_file()
