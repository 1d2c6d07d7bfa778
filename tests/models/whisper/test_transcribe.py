"""``transcribe`` on the real tiny.en (skipped without ``make whisper-weights``), and its rules on
small inputs: the timestamp rules, the seeking rule, the fallback's numbers, bad input."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from glassformer.audio import AudioError, load_audio
from glassformer.models.whisper import packaged
from glassformer.models.whisper.transcribe import (
    Segment,
    TimestampRules,
    Vocabulary,
    WindowDecode,
    _segments,
    compression_ratio,
    transcribe,
)
from glassformer.utils.paths import data_file

JFK = data_file("whisper_samples", "jfk.flac")
FSDD = data_file("fsdd", "recordings")
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
needs_weights = pytest.mark.skipif(
    not packaged.packaged_tiny_en_available() or JFK is None,
    reason="Whisper tiny.en weights absent (run `make whisper-weights`) or ../shared/data/whisper_samples/jfk.flac missing",
)


def _words(text: str) -> list[str]:
    """Word for word: case and punctuation aside (tiny.en drops the comma after "Americans")."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


@pytest.fixture(scope="module")
def tiny_en():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return packaged.load_tiny_en()


@pytest.fixture(scope="module")
def jfk_greedy(tiny_en):
    model, tokenizer = tiny_en
    return transcribe(model, tokenizer, JFK)


@needs_weights
def test_jfk_greedy_word_for_word(jfk_greedy) -> None:
    assert _words(jfk_greedy.text) == _words(JFK_TEXT)
    assert jfk_greedy.segments == [Segment(0.0, 11.0, jfk_greedy.text)]
    assert jfk_greedy.language == "en" and 0 < jfk_greedy.real_time_factor
    window = jfk_greedy.windows[0]
    assert window.temperature == 0.0 and window.avg_logprob > -1.0 and window.no_speech_prob < 0.6


@needs_weights
def test_greedy_tokens_equal_transformers_generate(tiny_en, jfk_greedy) -> None:
    """transformers' WhisperForConditionalGeneration.generate on the same converted weights, with
    the same prompt and suppression lists, picks the very same tokens."""
    transformers = pytest.importorskip("transformers")
    from glassformer.audio import log_mel_spectrogram
    from glassformer.models.whisper.hf import config_to_hf, state_dict_to_hf

    model, tokenizer = tiny_en
    hf = transformers.WhisperForConditionalGeneration(transformers.WhisperConfig(**config_to_hf(model.config))).eval()
    state = state_dict_to_hf(model)
    hf.load_state_dict({**state, "proj_out.weight": state["model.decoder.embed_tokens.weight"]}, strict=True)
    features = torch.from_numpy(log_mel_spectrogram(load_audio(JFK)))[None]
    with torch.no_grad():
        ids = hf.generate(features, decoder_input_ids=torch.tensor([tokenizer.sot_sequence()]), max_new_tokens=100,
                          do_sample=False, num_beams=1, suppress_tokens=tokenizer.suppress_tokens(),
                          begin_suppress_tokens=tokenizer.begin_suppress_tokens())[0].tolist()  # fmt: skip
    theirs = [i for i in ids if i not in (*tokenizer.sot_sequence(), tokenizer.eot)]
    assert jfk_greedy.windows[0].tokens == theirs


@needs_weights
def test_jfk_beam_five_word_for_word(tiny_en) -> None:
    model, tokenizer = tiny_en
    result = transcribe(model, tokenizer, JFK, beam_size=5)
    assert _words(result.text) == _words(JFK_TEXT)
    assert result.windows[0].avg_logprob > -1.0


@needs_weights
def test_a_second_of_silence_is_empty(tiny_en) -> None:
    model, tokenizer = tiny_en
    result = transcribe(model, tokenizer, np.zeros(16000, np.float32))
    assert result.text == "" and result.segments == []
    assert result.windows[0].no_speech_prob > 0.6 and result.windows[0].skipped


@needs_weights
def test_timestamps_on_jfk(tiny_en) -> None:
    model, tokenizer = tiny_en
    result = transcribe(model, tokenizer, JFK, timestamps=True)
    assert _words(result.text) == _words(JFK_TEXT)
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and all(s.start < s.end <= 11.0 for s in result.segments)


@needs_weights
@pytest.mark.skipif(FSDD is None, reason="../shared/data/fsdd/recordings missing")
def test_long_audio_is_transcribed_in_windows(tiny_en) -> None:
    """jfk, 43 s of spoken digits (a second apart, in a shuffled order), jfk: 65 s in three windows;
    both sentences come out whole."""
    model, tokenizer = tiny_en
    jfk = load_audio(JFK)
    gap = np.zeros(16000, np.float32)
    digits: list[np.ndarray] = []
    paths = sorted(Path(FSDD).glob("*_jackson_*.wav"))
    random.Random(0).shuffle(paths)
    for path in paths:
        digits += [load_audio(path), gap]
        if sum(len(d) for d in digits) > 43 * 16000:
            break
    audio = np.concatenate([jfk, gap, *digits, jfk])
    result = transcribe(model, tokenizer, audio, timestamps=True)
    assert len(audio) / 16000 > 60 and len(result.windows) >= 3
    text = " ".join(_words(result.text))
    sentence = " ".join(_words(JFK_TEXT))
    assert text.startswith(sentence) and text.endswith(sentence), result.text
    assert result.segments[-1].end > 60


@needs_weights
def test_short_and_empty_audio(tiny_en, tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    model, tokenizer = tiny_en
    result = transcribe(model, tokenizer, np.zeros(1600, np.float32))  # 0.1 s
    assert result.text == "" and math.isclose(result.duration, 0.1)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav"):
        transcribe(model, tokenizer, empty)


# ---- the rules, on small inputs (no weights needed) ------------------------------------------


class _Vocab:
    """The ids TimestampRules reads: text below 10, end 8, no-timestamps 9, timestamps from 10."""

    timestamp_begin, eot, no_timestamps = 10, 8, 9


def _rules_allow(seq: list[int], prefix: int = 2, logits: torch.Tensor | None = None) -> set[int]:
    rules = TimestampRules(_Vocab(), prefix)  # type: ignore[arg-type]
    tokens = torch.tensor([[0] * prefix + seq])
    logits = torch.zeros(1, 80) if logits is None else logits
    out = rules(tokens, logits)
    return set(torch.isfinite(out[0]).nonzero().flatten().tolist())


def test_timestamp_rules() -> None:
    text_likely = torch.zeros(1, 80)
    text_likely[0, :9] = 10.0  # text far likelier than any timestamp, so rule 5 stays out of the way
    assert _rules_allow([], logits=text_likely) == set(range(10, 61))  # open with a timestamp of at most 1 s
    assert _rules_allow([12], logits=text_likely) == set(range(9))  # after the opening one: text
    assert _rules_allow([12, 3, 14, 14], logits=text_likely) == set(range(9))  # a pair just closed: text
    assert _rules_allow([12, 3, 15], logits=text_likely) == {8} | set(range(15, 80))  # lone: close it or end
    assert _rules_allow([12, 3], logits=text_likely) == set(range(9)) | set(range(13, 80))  # never go back
    assert _rules_allow([12, 3]) == set(range(13, 80))  # flat logits: the timestamps' total beats any text token


def test_segments_seek_by_the_last_timestamp() -> None:
    vocab = Vocabulary.__new__(Vocabulary)
    vocab.timestamp_begin = 10
    vocab.tokenizer = type("T", (), {"decode": staticmethod(lambda ids: " ".join(map(str, ids)))})()
    tokens = [10, 1, 2, 60, 60, 3, 4, 110, 110, 5]  # two closed pieces, then text cut off by the window
    decoded = WindowDecode(30.0, tokens, "", 0.0, -0.2, 1.0, 0.01)
    found, advance = _segments(vocab, decoded, 3000, timestamps=True)
    assert found == [Segment(30.0, 31.0, "1 2"), Segment(31.0, 32.0, "3 4")]
    assert advance == 200  # the next window starts at the last closed timestamp, 2.00 s in
    ending = [10, 1, 2, 60]  # a single timestamp at the end: the window was done
    found, advance = _segments(vocab, WindowDecode(0.0, ending, "1 2", 0.0, -0.2, 1.0, 0.0), 3000, timestamps=True)
    assert found == [Segment(0.0, 1.0, "1 2")] and advance == 3000


def test_compression_ratio_flags_loops() -> None:
    assert compression_ratio("") == 0.0
    assert compression_ratio("thank you " * 30) > 2.4 > compression_ratio(JFK_TEXT)


def test_a_plain_vocabulary_model_decodes_from_its_start_token() -> None:
    """whisper-digits' shape (3-s encoder, characters): unpadded features, no Whisper control tokens."""
    from glassformer.data.speech import SpeechVocab
    from glassformer.models.whisper import Whisper, WhisperConfig
    from glassformer.models.whisper.config import whisper_digits

    config: WhisperConfig = whisper_digits().replace(dim=32, n_heads=2, ffn_dim=64, n_layers=1, n_decoder_layers=1)
    torch.manual_seed(0)
    model = Whisper(config).eval()
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 64000).astype(np.float32)  # 4 s
    result = transcribe(model, SpeechVocab(), noise)
    assert [w.start for w in result.windows] == [0.0, 3.0]  # windows of the encoder's own 3 s
    assert all(math.isnan(w.no_speech_prob) for w in result.windows)
    assert set(result.text) <= set(" 'abcdefghijklmnopqrstuvwxyz")
    with pytest.raises(ValueError, match="timestamps=True needs a Whisper tokenizer"):
        transcribe(model, SpeechVocab(), np.zeros(1600, np.float32), timestamps=True)


def test_bad_options_are_named() -> None:
    from glassformer.models.whisper import Whisper
    from glassformer.models.whisper.config import tiny, whisper_tiny_en

    model = Whisper(tiny(whisper_tiny_en()))
    audio = np.zeros(1600, np.float32)
    with pytest.raises(ValueError, match="beam_size=0"):
        transcribe(model, None, audio, beam_size=0)
    with pytest.raises(ValueError, match="temperatures"):
        transcribe(model, None, audio, temperatures=())
    with pytest.raises(AudioError, match="16-kHz mono float"):
        transcribe(model, None, np.zeros((2, 100), np.float32))


@needs_weights
def test_cli_prints_text_and_real_time_factor(tmp_path: Path, capsys) -> None:
    soundfile = pytest.importorskip("soundfile")
    from glassformer.cli import main

    clip = tmp_path / "jfk_start.wav"
    soundfile.write(clip, load_audio(JFK)[: 3 * 16000], 16000)  # "And so my fellow Americans"
    assert main(["transcribe", str(clip), "--timestamps"]) == 0
    out = capsys.readouterr().out
    assert "fellow" in out.lower() and "real-time factor" in out and "[   0.00 ->" in out
    with pytest.raises(SystemExit, match="no such audio file"):
        main(["transcribe", str(tmp_path / "missing.wav")])
