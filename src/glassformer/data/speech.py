"""Speech data for the ``whisper-digits`` recogniser: FSDD recordings, espeak-ng speech, batches.

Three sources of (audio, transcript) pairs:

- **FSDD** (Free Spoken Digit Dataset, ``$GLASSFORMER_DATA/fsdd/recordings``): 3,000 recordings
  named ``{digit}_{speaker}_{index}.wav``, 6 speakers x 10 digits x 50 takes, 8 kHz. The
  dataset's README fixes the split by take: index 0-4 is test (300), 5-49 train (2,700). Every
  speaker is in both halves; the split holds out takes, not voices. :func:`fsdd_split`.
- **espeak-ng** (a formant synthesizer, ``make espeak`` installs it): digit strings ("four two
  seven") and short sentences around them ("the code is four two"), spoken by several English
  voices at several speeds and pitches. Which texts and settings are drawn is a pure function of
  a seed (:func:`synth_specs`), and espeak-ng itself is deterministic, so the same seed gives the
  same files byte for byte. Files are cached under ``$GLASSFORMER_CACHE/speech`` by a hash of
  their settings. The test split speaks with voices the training split never hears
  (:data:`TEST_VOICES`), which is what makes it a test of generalisation, not of memory.
- A batch for the model (:class:`SpeechDataset`, :func:`collate_speech`): Whisper log-mel
  features of each clip at its own length (``glassformer.audio.log_mel_spectrogram`` with
  ``padding_to=None``), padded on the right to the longest clip with the clip's own floor value
  (what ``glassformer.audio.log_mel_batch`` does, so padding looks like silence) with an
  ``attention_mask`` that hides the padding from the encoder, and the transcript as character ids followed by end-of-text (:class:`SpeechVocab`), padded with
  ``IGNORE_INDEX``.

:func:`build_digits` is the ``glassformer train whisper-digits`` data builder: FSDD-train plus
synthetic speech for training, with SpecAugment, and held-out FSDD training takes for evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glassformer.audio import load_audio, log_mel_spectrogram, spec_augment
from glassformer.metrics.wer import ONES, normalize_text
from glassformer.models.base import IGNORE_INDEX
from glassformer.models.whisper.config import DIGITS_CHARS, DIGITS_SPECIALS
from glassformer.registry import DataRequest
from glassformer.utils.config import unknown_keys_message
from glassformer.utils.paths import cache_root, data_file
from glassformer.utils.progress import Progress
from glassformer.utils.suggest import did_you_mean

DIGIT_WORDS = ONES[:10]
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_TEST_TAKES = range(5)

# Voices (espeak-ng ``-v`` names, ``+variant`` changes the speaker): training hears these ...
TRAIN_VOICES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-029",
                "en-us+f3", "en+f2", "en+m3", "en-gb-x-rp+f4", "en-us+m5", "en+m2")
# ... and the synthetic test split speaks only with these, never heard in training.
TEST_VOICES = ("en-us-nyc", "en-gb-x-gbcwmd", "en-us+f5", "en+m7", "en-gb+f1")
SPEEDS = (130, 150, 170, 190, 210)  # words per minute (espeak-ng's default is 175)
PITCHES = (25, 35, 50, 65, 75)  # 0-99 (default 50)
SENTENCES = ("call {}", "the code is {}", "dial {} please", "my number is {}", "press {} now",
             "room {}", "it is {} o'clock", "add {}")
ESPEAK_HINT = "run `make espeak` (Debian: apt-get install espeak-ng)"


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Utterance:
    """One recording and what is said in it (``speaker``: FSDD's speaker name or the espeak-ng voice)."""

    path: Path
    text: str
    speaker: str


@dataclass(frozen=True)
class SynthSpec:
    """What espeak-ng is asked to say and how: ``espeak-ng -v voice -s speed -p pitch text``."""

    text: str
    voice: str
    speed: int
    pitch: int


# ---------------------------------------------------------------------------------------- FSDD


def fsdd_root() -> Path:
    """``$GLASSFORMER_DATA/fsdd/recordings``, or a ``FileNotFoundError`` that says where it was looked for."""
    root = data_file("fsdd", "recordings")
    if root is None:
        raise FileNotFoundError(
            "the Free Spoken Digit Dataset was not found: set GLASSFORMER_DATA to the folder holding "
            "fsdd/recordings/*.wav (see shared/data/SOURCES.md) or pass its recordings folder"
        )
    return root


def fsdd_split(root: str | os.PathLike[str] | None = None) -> tuple[list[Utterance], list[Utterance]]:
    """FSDD's own split, ``(train, test)``: takes 5-49 train (2,700), takes 0-4 test (300), sorted by name.

    ``root`` is the ``recordings`` folder (default :func:`fsdd_root`). A ``.wav`` whose name is not
    ``{digit}_{speaker}_{index}.wav`` is an error naming it: it would otherwise fall silently
    out of both halves.
    """
    folder = Path(root) if root is not None else fsdd_root()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder; pass FSDD's recordings folder (fsdd/recordings)")
    train: list[Utterance] = []
    test: list[Utterance] = []
    for path in sorted(folder.glob("*.wav")):
        match = FSDD_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path}: not an FSDD name; expected {{digit}}_{{speaker}}_{{index}}.wav, e.g. 7_jackson_32.wav")
        digit, speaker, take = int(match.group(1)), match.group(2), int(match.group(3))
        (test if take in FSDD_TEST_TAKES else train).append(Utterance(path, DIGIT_WORDS[digit], speaker))
    if not train or not test:
        raise ValueError(f"{folder}: found {len(train)} training and {len(test)} test recordings; both halves must be non-empty")
    return train, test


# ------------------------------------------------------------------------------------ espeak-ng


def espeak_binary() -> str:
    """The path of ``espeak-ng``, or :class:`EspeakMissing` naming the make target that installs it."""
    found = shutil.which("espeak-ng")
    if found is None:
        raise EspeakMissing(f"espeak-ng is not installed, so no synthetic speech can be made: {ESPEAK_HINT}")
    return found


def digit_string(rng: random.Random, max_digits: int) -> str:
    """1 to ``max_digits`` digits in words: ``"four two seven"``."""
    return " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, max_digits)))


def synth_specs(count: int, seed: int, voices: Sequence[str] = TRAIN_VOICES, max_digits: int = 4,
                sentence_fraction: float = 0.25) -> list[SynthSpec]:
    """``count`` texts and speaking settings drawn from ``random.Random(seed)`` (the same seed, the same list).

    A ``sentence_fraction`` of them put the digit string in one of :data:`SENTENCES`.
    """
    if count < 0 or max_digits < 1 or not 0 <= sentence_fraction <= 1 or not voices:
        raise ValueError(f"synth_specs needs count >= 0, max_digits >= 1, sentence_fraction in [0, 1] and voices; "
                         f"got count={count}, max_digits={max_digits}, sentence_fraction={sentence_fraction}, "
                         f"voices={list(voices)}")
    rng = random.Random(seed)
    specs = []
    for _ in range(count):
        text = digit_string(rng, max_digits)
        if rng.random() < sentence_fraction:
            text = rng.choice(SENTENCES).format(text)
        specs.append(SynthSpec(text, rng.choice(voices), rng.choice(SPEEDS), rng.choice(PITCHES)))
    return specs


def speech_cache() -> Path:
    """Where synthesized files are kept: ``$GLASSFORMER_CACHE/speech``."""
    return cache_root() / "speech"


def _espeak_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.split("Data at")[0].strip()


@functools.lru_cache(maxsize=4)
def espeak_voices(binary: str) -> tuple[frozenset[str], frozenset[str]]:
    """``(languages, variants)`` espeak-ng knows: ``-v`` takes ``language`` or ``language+variant``.

    Checked before speaking because espeak-ng falls back to its default voice, silently and with
    exit status 0, for a name it does not know: a typo would quietly make a "held-out" voice the
    same as a training one.
    """
    listing = subprocess.run([binary, "--voices"], capture_output=True, text=True, check=True).stdout
    languages: set[str] = set()
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            languages.add(fields[1].lower())
            languages.update(m.lower() for m in re.findall(r"\((\S+) \d+\)", line))
    variants = subprocess.run([binary, "--voices=variant"], capture_output=True, text=True, check=True).stdout
    names = {line.split()[4].split("/", 1)[-1].lower() for line in variants.splitlines()[1:] if len(line.split()) >= 5}
    return frozenset(languages), frozenset(names)


def check_voice(binary: str, voice: str) -> None:
    """Refuse a voice espeak-ng would replace by its default, naming what it knows instead."""
    languages, variants = espeak_voices(binary)
    language, _, variant = voice.lower().partition("+")
    if language not in languages:
        raise ValueError(f"espeak-ng has no language {language!r} (in voice {voice!r}){did_you_mean(language, languages)}; "
                         "list them with `espeak-ng --voices=en`")
    if variant and variant not in variants:
        raise ValueError(f"espeak-ng has no voice variant {variant!r} (in voice {voice!r}){did_you_mean(variant, variants)}; "
                         "list them with `espeak-ng --voices=variant`")


def _cache_name(spec: SynthSpec, version: str) -> str:
    key = "\n".join((version, spec.voice, str(spec.speed), str(spec.pitch), spec.text))
    return hashlib.sha256(key.encode()).hexdigest()[:20] + ".wav"


def _speak(binary: str, spec: SynthSpec, path: Path) -> None:
    """One file, written under a temporary name and renamed, so a killed run leaves no half file."""
    if path.is_file():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    args = [binary, "-w", str(tmp), "-v", spec.voice, "-s", str(spec.speed), "-p", str(spec.pitch), spec.text]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"espeak-ng failed for voice {spec.voice!r} and text {spec.text!r}: "
                           f"{result.stderr.strip() or 'no audio written'}; check the voice with `espeak-ng --voices=en`")
    os.replace(tmp, path)


def synthesize(specs: Sequence[SynthSpec], cache_dir: str | os.PathLike[str] | None = None, *,
               workers: int = 2, progress: bool = True) -> list[Utterance]:
    """The recordings of ``specs`` (made once, then read from ``cache_dir``, default :func:`speech_cache`)."""
    binary = espeak_binary()
    folder = Path(cache_dir) if cache_dir is not None else speech_cache()
    folder.mkdir(parents=True, exist_ok=True)
    version = _espeak_version(binary)
    for voice in sorted({spec.voice for spec in specs}):
        check_voice(binary, voice)
    paths = [folder / _cache_name(spec, version) for spec in specs]
    missing = [(spec, path) for spec, path in zip(specs, paths) if not path.is_file()]
    if missing:
        with Progress(total=len(missing), desc="espeak-ng", unit="file", enabled=progress) as bar, \
                ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(lambda item: _speak(binary, *item), missing):
                bar.update(1)
    return [Utterance(path, spec.text, spec.voice) for spec, path in zip(specs, paths)]


def synthetic_split(n_train: int, n_test: int, seed: int = 0, max_digits: int = 4,
                    cache_dir: str | os.PathLike[str] | None = None, progress: bool = True
                    ) -> tuple[list[Utterance], list[Utterance]]:
    """Synthetic ``(train, test)``: training voices :data:`TRAIN_VOICES`, test voices :data:`TEST_VOICES`."""
    train = synth_specs(n_train, seed, TRAIN_VOICES, max_digits)
    test = synth_specs(n_test, seed + 1_000_003, TEST_VOICES, max_digits)
    return (synthesize(train, cache_dir, progress=progress), synthesize(test, cache_dir, progress=progress))


# ------------------------------------------------------------------------------ text <-> token ids


class SpeechVocab:
    """Characters as token ids, the ``whisper-digits`` vocabulary (``models/whisper/config.py``):
    pad 0, start 1, end 2, then :data:`DIGITS_CHARS` (space, apostrophe, a-z).

    Ten digit words need only 15 letters, but spelling keeps the sentences, and words the model
    never heard, expressible; 31 ids keep the output layer tiny. Text is passed through
    :func:`glassformer.metrics.normalize_text` first, so "5" is spelled "five".
    """

    pad_token_id = DIGITS_SPECIALS.index("<pad>")
    decoder_start_token_id = DIGITS_SPECIALS.index("<|startoftranscript|>")
    eos_token_id = DIGITS_SPECIALS.index("<|endoftext|>")
    alphabet = DIGITS_CHARS
    offset = len(DIGITS_SPECIALS)

    @property
    def vocab_size(self) -> int:
        return self.offset + len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        """Character ids of the normalised text (no start or end token)."""
        normal = normalize_text(text)
        bad = sorted({c for c in normal if c not in self.alphabet})
        if bad:
            raise ValueError(f"{text!r} holds characters outside the whisper-digits alphabet {bad}; "
                             f"it spells only {self.alphabet!r}")
        return [self.offset + self.alphabet.index(c) for c in normal]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, stopping at the end token; special ids are skipped."""
        chars = []
        for i in (int(i) for i in ids):
            if i == self.eos_token_id:
                break
            if i >= self.offset:
                chars.append(self.alphabet[i - self.offset])
        return "".join(chars)

    def labels(self, text: str) -> list[int]:
        """Training targets: the characters then end-of-text (the start token is the model's to prepend)."""
        return [*self.encode(text), self.eos_token_id]

    def check_model(self, model_config: Any) -> None:
        """Refuse a model whose vocabulary or special ids disagree with this one (the labels would be wrong)."""
        expected = {"vocab_size": self.vocab_size, "pad_token_id": self.pad_token_id,
                    "decoder_start_token_id": self.decoder_start_token_id, "eos_token_id": self.eos_token_id}
        wrong = [f"{k}={getattr(model_config, k, None)} (the speech data needs {v})" for k, v in expected.items()
                 if getattr(model_config, k, None) != v]
        if wrong:
            raise ValueError("the model config does not match the whisper-digits character vocabulary: "
                             + ", ".join(wrong) + "; train the whisper-digits preset or pass those model.KEY=VALUE")


# ------------------------------------------------------------------------------ features and batches


def clip_features(path: Path, n_mels: int = 80) -> Tensor:
    """``(n_mels, frames)`` Whisper log-mel features of a file at its own length (100 frames per second)."""
    return torch.from_numpy(log_mel_spectrogram(load_audio(path), n_mels=n_mels, padding_to=None))


class SpeechDataset:
    """Utterances as ``{"input_features": (n_mels, frames), "labels": (tokens,)}``, features computed once.

    ``max_frames`` drops clips longer than the model's encoder can take (with one warning that
    counts them), instead of failing in the middle of training.
    """

    def __init__(self, utterances: Sequence[Utterance], vocab: SpeechVocab | None = None, n_mels: int = 80,
                 max_frames: int | None = None, progress: bool = True, name: str = "speech") -> None:
        self.vocab = vocab or SpeechVocab()
        self.utterances: list[Utterance] = []
        self.features: list[Tensor] = []
        self.labels: list[Tensor] = []
        dropped = 0
        with Progress(total=len(utterances), desc=f"{name} features", unit="clip", enabled=progress) as bar:
            for utterance in utterances:
                features = clip_features(utterance.path, n_mels)
                bar.update(1)
                if max_frames is not None and features.shape[-1] > max_frames:
                    dropped += 1
                    continue
                self.utterances.append(utterance)
                self.features.append(features)
                self.labels.append(torch.tensor(self.vocab.labels(utterance.text), dtype=torch.long))
        if dropped:
            warnings.warn(f"{name}: dropped {dropped} of {len(utterances)} clips longer than {max_frames} frames "
                          "(the encoder's max_source_positions); use fewer digits or a larger model", stacklevel=2)
        if not self.features:
            raise ValueError(f"{name}: no clips left (of {len(utterances)}); every one was longer than {max_frames} frames")

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"input_features": self.features[index], "labels": self.labels[index]}

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.utterances]


def collate_speech(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """A batch for ``Whisper.forward``: ``input_features`` (B, n_mels, frames) padded with each clip's
    floor, ``attention_mask`` (B, frames; 1 = a real frame, so ``.sum(1)`` are the lengths) and
    ``labels`` (B, L) padded with ``IGNORE_INDEX``.

    The mask makes a clip's encoding independent of the clips it is batched with: transformers'
    Whisper has no mask because it always pads to 30 s, which a model of 1-s clips cannot afford.
    """
    if not samples:
        raise ValueError("collate_speech got no samples")
    frames = max(s["input_features"].shape[-1] for s in samples)
    tokens = max(s["labels"].shape[0] for s in samples)
    features = torch.stack([
        torch.nn.functional.pad(s["input_features"], (0, frames - s["input_features"].shape[-1]),
                                value=float(s["input_features"].min()))
        for s in samples
    ])
    labels = torch.full((len(samples), tokens), IGNORE_INDEX, dtype=torch.long)
    for row, sample in zip(labels, samples):
        row[: sample["labels"].shape[0]] = sample["labels"]
    real = torch.tensor([s["input_features"].shape[-1] for s in samples])
    attention_mask = (torch.arange(frames) < real[:, None]).long()
    return {"input_features": features, "attention_mask": attention_mask, "labels": labels}


@dataclass(frozen=True)
class Augment:
    """SpecAugment for short clips: LibriSpeech's policy scaled down to ~1-s inputs (100 frames)."""

    n_freq_masks: int = 2
    freq_width: int = 12
    n_time_masks: int = 2
    time_width: int = 10


class TrainBatches:
    """``get_batch(split, step, generator)`` for the engine: ``batch_size`` distinct random clips, augmented.

    A frequency mask covers the clip's real frames only: the padding keeps its silence value, as
    in evaluation. Drawing each batch from the engine's generator (seeded by seed, split, rank and step) makes a
    resumed run replay the same batches and masks, and gives each DDP process its own.
    """

    def __init__(self, dataset: SpeechDataset, batch_size: int, augment: Augment | None = Augment()) -> None:
        if len(dataset) < batch_size:
            raise ValueError(f"the training set has {len(dataset)} clips, fewer than batch_size={batch_size}")
        self.dataset, self.batch_size, self.augment = dataset, batch_size, augment

    def __call__(self, split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        picks = torch.randperm(len(self.dataset), generator=generator)[: self.batch_size].tolist()
        batch = collate_speech([self.dataset[i] for i in picks])
        if self.augment is not None:
            a = self.augment
            plain, real = batch["input_features"], batch["attention_mask"].bool()
            masked = spec_augment(plain, a.n_freq_masks, a.freq_width, a.n_time_masks, a.time_width,
                                  generator=generator, lengths=real.sum(1)).features
            batch["input_features"] = torch.where(real[:, None, :], masked, plain)  # padding stays silence
        return batch


class FixedBatches:
    """The data set in order as collated batches (the last may be smaller): evaluation sees the same ones each time.

    Only iterable, on purpose: the engine treats anything with ``__len__`` and ``__getitem__`` as
    a data set of single samples and would collate the batches again.
    """

    def __init__(self, dataset: SpeechDataset, batch_size: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        n = len(self.dataset)
        for start in range(0, n, self.batch_size):
            yield collate_speech([self.dataset[i] for i in range(start, min(start + self.batch_size, n))])


# ------------------------------------------------------------------------------ the train builder

DIGITS_OPTIONS = {"fsdd": "FSDD recordings folder", "synthetic": "synthetic training clips (0: FSDD only)",
                  "max_digits": "longest synthetic digit string", "seed": "seed of the synthetic texts",
                  "spec_augment": "mask the training features (true/false)", "cache": "synthetic audio cache folder"}


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"data.{name}={value!r}: expected true or false")


FSDD_VALIDATION_TAKES = range(5, 8)  # three takes of every speaker and digit (180 clips), cut from train


def fsdd_validation_split(train: list[Utterance]) -> tuple[list[Utterance], list[Utterance]]:
    """``(fit, validation)``: takes 5-7 of FSDD's training half held out to choose checkpoints.

    The test takes (0-4) must never pick the best step, or the reported test WER is optimistic;
    these 180 clips play that role instead, with the same speakers as test.
    """
    fit: list[Utterance] = []
    validation: list[Utterance] = []
    for utterance in train:
        take = int(FSDD_NAME.match(Path(utterance.path).name).group(3))
        (validation if take in FSDD_VALIDATION_TAKES else fit).append(utterance)
    return fit, validation


def build_digits(train_config: Any, model_config: Any, request: DataRequest) -> tuple[TrainBatches, FixedBatches]:
    """The ``whisper-digits`` data builder: FSDD-train + espeak-ng speech to train, FSDD validation to evaluate.

    Evaluation (and so ``best/``) uses :func:`fsdd_validation_split`'s held-out training takes,
    never FSDD-test: the test set is only scored once, at the end, by ``bench/speech.py``.

    Options (``data.KEY=VALUE``): ``fsdd`` (recordings folder), ``synthetic`` (count, default
    3000; 0 needs no espeak-ng), ``max_digits`` (4), ``seed`` (0), ``spec_augment`` (true),
    ``cache`` (default ``$GLASSFORMER_CACHE/speech``).
    """
    options = dict(request.options)
    unknown = sorted(set(options) - set(DIGITS_OPTIONS))
    if unknown:
        raise ValueError("unknown data option: " + unknown_keys_message(unknown, sorted(DIGITS_OPTIONS), "speech data"))
    vocab = SpeechVocab()
    vocab.check_model(model_config)
    progress = bool(train_config.progress)
    fsdd_train, validation = fsdd_validation_split(fsdd_split(options.get("fsdd"))[0])
    count = int(options.get("synthetic", 3000))
    synthetic = []
    if count:
        synthetic = synthesize(synth_specs(count, int(options.get("seed", 0)), TRAIN_VOICES,
                                           int(options.get("max_digits", 4))), options.get("cache"), progress=progress)
    max_frames = 2 * int(model_config.max_source_positions)  # the stride-2 convolution: two frames a position
    n_mels = int(model_config.n_mels)
    train = SpeechDataset(fsdd_train + synthetic, vocab, n_mels, max_frames, progress, "train")
    held_out = SpeechDataset(validation, vocab, n_mels, max_frames, progress, "fsdd-validation")
    augment = Augment() if _flag(options.get("spec_augment", True), "spec_augment") else None
    return TrainBatches(train, train_config.batch_size, augment), FixedBatches(held_out, train_config.batch_size)
