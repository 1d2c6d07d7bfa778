"""Speech data: FSDD's split, deterministic espeak-ng speech, the character vocabulary and the batches."""

from __future__ import annotations

import shutil
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from glassformer.audio import load_audio, log_mel_batch
from glassformer.data import speech
from glassformer.data.speech import (
    IGNORE_INDEX,
    TEST_VOICES,
    TRAIN_VOICES,
    EspeakMissing,
    SpeechDataset,
    SpeechVocab,
    SynthSpec,
    TrainBatches,
    build_digits,
    collate_speech,
    fsdd_split,
    synth_specs,
    synthesize,
)
from glassformer.models.whisper import Whisper
from glassformer.models.whisper.config import whisper_digits
from glassformer.registry import DataRequest
from glassformer.utils.paths import data_file

FSDD = data_file("fsdd", "recordings")
needs_fsdd = pytest.mark.skipif(FSDD is None, reason="FSDD not found: set GLASSFORMER_DATA (shared/data/SOURCES.md)")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing: run `make espeak`")


def _key(u: speech.Utterance) -> tuple[str, ...]:
    return tuple(u.path.stem.split("_"))  # (digit, speaker, take)


@needs_fsdd
def test_fsdd_split_is_the_readme_split() -> None:
    train, test = fsdd_split()
    assert (len(train), len(test)) == (2700, 300)
    assert not {_key(u) for u in train} & {_key(u) for u in test}
    assert {int(_key(u)[2]) for u in test} == set(range(5))
    assert {int(_key(u)[2]) for u in train} == set(range(5, 50))
    speakers = {u.speaker for u in test}
    assert len(speakers) == 6 and speakers == {u.speaker for u in train}  # takes are held out, not voices
    assert Counter(u.text for u in test) == {w: 30 for w in speech.DIGIT_WORDS}
    assert all(u.text == speech.DIGIT_WORDS[int(_key(u)[0])] for u in train + test)


@needs_fsdd
def test_validation_takes_are_cut_from_train_never_from_test() -> None:
    train, test = fsdd_split()
    fit, validation = speech.fsdd_validation_split(train)
    assert (len(fit), len(validation)) == (2520, 180)
    assert {int(_key(u)[2]) for u in validation} == set(speech.FSDD_VALIDATION_TAKES)
    assert not {_key(u) for u in validation} & ({_key(u) for u in fit} | {_key(u) for u in test})
    assert Counter(u.text for u in validation) == {w: 18 for w in speech.DIGIT_WORDS}


def test_fsdd_bad_names_and_folders_are_named(tmp_path) -> None:
    (tmp_path / "7_jackson_3.wav").write_bytes(b"")
    (tmp_path / "seven.wav").write_bytes(b"")
    with pytest.raises(ValueError, match=r"seven\.wav: not an FSDD name"):
        fsdd_split(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        fsdd_split(tmp_path / "absent")


def test_synth_specs_depend_only_on_the_seed() -> None:
    assert synth_specs(50, seed=3) == synth_specs(50, seed=3)
    assert synth_specs(50, seed=3) != synth_specs(50, seed=4)
    specs = synth_specs(400, seed=0, max_digits=3)
    assert all(1 <= sum(w in speech.DIGIT_WORDS for w in s.text.split()) <= 3 for s in specs)
    assert any(s.text.split()[0] not in speech.DIGIT_WORDS for s in specs)  # some sentences
    assert {s.voice for s in specs} == set(TRAIN_VOICES)
    assert not set(TRAIN_VOICES) & set(TEST_VOICES)


@needs_espeak
def test_synthesis_is_deterministic_and_cached(tmp_path) -> None:
    specs = synth_specs(3, seed=11) + [SynthSpec("two nine", TEST_VOICES[0], 150, 40)]
    first = synthesize(specs, tmp_path / "a", progress=False)
    second = synthesize(specs, tmp_path / "b", progress=False)
    assert [u.text for u in first] == [s.text for s in specs]
    assert [u.path.read_bytes() for u in first] == [u.path.read_bytes() for u in second]
    stamps = [u.path.stat().st_mtime_ns for u in first]
    again = synthesize(specs, tmp_path / "a", progress=False)
    assert [u.path.stat().st_mtime_ns for u in again] == stamps  # read from the cache, not spoken again
    assert load_audio(first[0].path).size > 1600  # at least 0.1 s of 16-kHz audio


@needs_espeak
def test_a_bad_voice_is_named(tmp_path) -> None:
    """espeak-ng itself would fall back to its default voice with exit status 0."""
    with pytest.raises(ValueError, match="no language 'en-uss'.*did you mean 'en-us'"):
        synthesize([SynthSpec("one", "en-uss", 150, 50)], tmp_path, progress=False)
    with pytest.raises(ValueError, match="no voice variant 'f33'"):
        synthesize([SynthSpec("one", "en+f33", 150, 50)], tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_missing_espeak_names_the_make_target(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(EspeakMissing, match="make espeak"):
        synthesize(synth_specs(1, seed=0), tmp_path, progress=False)


def test_vocab_round_trip_and_checks() -> None:
    vocab = SpeechVocab()
    assert vocab.vocab_size == 31
    ids = vocab.labels("It's 5 o'clock!")
    assert ids[-1] == vocab.eos_token_id and vocab.decode(ids) == "its five oclock"
    assert vocab.decode([vocab.decoder_start_token_id, *vocab.encode("four two"), vocab.eos_token_id, 7]) == "four two"
    with pytest.raises(ValueError, match="outside the whisper-digits alphabet"):
        vocab.encode("naïve")
    good = SimpleNamespace(vocab_size=31, pad_token_id=0, decoder_start_token_id=1, eos_token_id=2)
    vocab.check_model(good)
    with pytest.raises(ValueError, match="vocab_size=51864"):
        vocab.check_model(SimpleNamespace(**{**vars(good), "vocab_size": 51864}))


@needs_fsdd
def test_collate_matches_log_mel_batch() -> None:
    """Padding each clip with its own floor reproduces glassformer.audio's batch of unpadded clips."""
    clips = fsdd_split()[1][:5]
    data = SpeechDataset(clips, progress=False)
    batch = collate_speech([data[i] for i in range(5)])
    reference = log_mel_batch([load_audio(u.path) for u in clips], padding_to=None)
    assert batch["input_features"].shape == reference.features.shape
    torch.testing.assert_close(batch["input_features"], reference.features, atol=0, rtol=0)
    assert torch.equal(batch["attention_mask"].sum(1), reference.lengths)
    assert torch.equal(batch["attention_mask"], (torch.arange(reference.features.shape[-1]) < reference.lengths[:, None]).long())
    labels = batch["labels"]
    assert labels.shape == (5, max(len(u.text) for u in clips) + 1)
    for row, u in zip(labels, clips):
        assert data.vocab.decode(row[row != IGNORE_INDEX].tolist()) == u.text
        assert (row == IGNORE_INDEX).sum() == labels.shape[1] - len(u.text) - 1
    assert set(batch) == {"input_features", "attention_mask", "labels"}


@needs_fsdd
def test_train_batches_replay_and_mask_only_real_frames() -> None:
    data = SpeechDataset(fsdd_split()[1][:12], progress=False)
    batches = TrainBatches(data, batch_size=4)
    one = batches("train", 0, torch.Generator().manual_seed(5))
    two = batches("train", 0, torch.Generator().manual_seed(5))
    assert torch.equal(one["input_features"], two["input_features"]) and torch.equal(one["labels"], two["labels"])
    plain = TrainBatches(data, batch_size=4, augment=None)("train", 0, torch.Generator().manual_seed(5))
    assert torch.equal(one["labels"], plain["labels"])  # the same clips, drawn first from the generator
    assert not torch.equal(one["input_features"], plain["input_features"])
    picks = torch.randperm(len(data), generator=torch.Generator().manual_seed(5))[:4].tolist()
    for clip_aug, clip_plain, i in zip(one["input_features"], plain["input_features"], picks):
        real = data[i]["input_features"].shape[-1]
        assert torch.equal(clip_aug[:, real:], clip_plain[:, real:])  # time masks stay off the padding
        assert torch.equal(clip_plain[:, :real], data[i]["input_features"])


@needs_fsdd
def test_build_digits_without_synthesis(tmp_path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    for digit in range(10):  # takes 0, 5 and 25 of each digit: 10 test, 10 validation, 10 train
        for take in (0, 5, 25):
            name = f"{digit}_jackson_{take}.wav"
            (folder / name).symlink_to(FSDD / name)
    config = whisper_digits()
    request = DataRequest(preset=None, options={"fsdd": str(folder), "synthetic": "0"})  # type: ignore[arg-type]
    train, evaluation = build_digits(SimpleNamespace(batch_size=4, progress=False), config, request)
    batch = train("train", 0, torch.Generator().manual_seed(0))
    assert batch["input_features"].shape[:2] == (4, 80) and batch["labels"].shape[0] == 4
    assert [b["labels"].shape[0] for b in evaluation] == [4, 4, 2]
    out = Whisper(config)(**batch)  # the batch is the model's keyword arguments, loss included
    assert out.loss is not None and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="did you mean 'synthetic'"):
        build_digits(SimpleNamespace(batch_size=4, progress=False), config,
                     DataRequest(preset=None, options={"synthetc": 0}))  # type: ignore[arg-type]
