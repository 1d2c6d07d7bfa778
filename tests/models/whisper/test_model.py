"""The Whisper model on its own: the position table, the label shift, caches, presets and bad input."""

from __future__ import annotations

import pytest
import torch

from glassformer import registry
from glassformer.generate import generate
from glassformer.models.base import IGNORE_INDEX
from glassformer.models.whisper import DIGITS_CHARS, DIGITS_SPECIALS, Whisper, WhisperConfig, shift_right
from glassformer.models.whisper.config import tiny, whisper_digits, whisper_tiny_en
from glassformer.models.whisper.model import whisper_sinusoids
from glassformer.utils.config import ConfigError


@pytest.fixture(scope="module")
def model() -> Whisper:
    torch.manual_seed(0)
    return Whisper(tiny(whisper_digits())).eval()


def _features(config: WhisperConfig, batch: int = 2, frames: int = 20) -> torch.Tensor:
    return torch.randn(batch, config.n_mels, frames, generator=torch.Generator().manual_seed(3))


def test_sinusoids_are_whispers_table() -> None:
    modeling = pytest.importorskip("transformers.models.whisper.modeling_whisper")
    assert torch.equal(whisper_sinusoids(1500, 384), modeling.sinusoids(1500, 384))


def test_labels_alone_train_like_the_shifted_inputs(model: Whisper) -> None:
    c = model.config
    labels = torch.tensor([[5, 6, 7, c.eos_token_id], [8, 9, c.eos_token_id, IGNORE_INDEX]])
    shifted = shift_right(labels, c.decoder_start_token_id, c.pad_token_id)
    assert shifted.tolist() == [[1, 5, 6, 7], [1, 8, 9, 2]]
    feats = _features(c)
    with torch.no_grad():
        alone = model(feats, labels=labels)
        given = model(feats, decoder_input_ids=shifted, labels=labels)
    torch.testing.assert_close(alone.logits, given.logits, atol=0, rtol=0)
    valid = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(given.logits[valid], labels[valid])
    torch.testing.assert_close(alone.loss, expected)


def test_a_full_frame_mask_changes_nothing(model: Whisper) -> None:
    feats = _features(model.config)
    ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    with torch.no_grad():
        plain = model(feats, ids).logits
        masked = model(feats, ids, attention_mask=torch.ones(2, 20, dtype=torch.long)).logits
    torch.testing.assert_close(masked, plain, atol=0, rtol=0)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_caches_decode_what_recomputation_decodes(model: Whisper, strategy: str) -> None:
    feats = _features(model.config, 3)
    beams = {"num_beams": 3} if strategy == "beam" else {}
    runs = {
        cache: generate(model, feats, strategy=strategy, max_new_tokens=10, cache=cache, cpu_kernels=False, **beams)
        for cache in ("none", "dynamic", "static")
    }
    assert runs["static"].tokens == runs["dynamic"].tokens == runs["none"].tokens
    assert all(len(row) == 10 for row in runs["none"].tokens)


def test_presets_and_twins() -> None:
    p = registry.get("whisper-tiny.en")
    assert p.build(p.make_config()).num_parameters() == 37_184_256  # 37.76M with the sinusoids
    digits = whisper_digits()
    assert digits.vocab_size == len(DIGITS_SPECIALS) + len(DIGITS_CHARS)
    assert 1_000_000 < Whisper(digits).num_parameters() < 3_000_000
    twin = tiny(whisper_tiny_en())
    assert (twin.vocab_size, twin.eos_token_id, twin.pad_token_id, twin.decoder_start_token_id) == (64, 62, 62, 63)
    assert tiny(digits).decoder_start_token_id == digits.decoder_start_token_id


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        WhisperConfig(n_mels=0)
    with pytest.raises(ConfigError, match="decoder_start_token_id"):
        WhisperConfig(vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=100)
    with pytest.raises(ConfigError, match="divisible"):
        WhisperConfig(dim=100, n_heads=6)


def test_bad_features_are_refused_at_the_boundary(model: Whisper) -> None:
    c = model.config
    ids = torch.tensor([[1, 5]])
    with pytest.raises(ValueError, match=f"n_mels={c.n_mels}"):
        model(torch.randn(1, c.n_mels + 1, 20), ids)
    with pytest.raises(ValueError, match=f"1 to {c.max_frames}.*windows"):
        model(torch.randn(1, c.n_mels, c.max_frames + 1), ids)
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(1, c.n_mels, 20, dtype=torch.long), ids)
    with pytest.raises(TypeError, match="float64.*float32"):
        model(torch.randn(1, c.n_mels, 20, dtype=torch.float64), ids)
    with pytest.raises(ValueError, match=r"features\[None\]"):
        model(torch.randn(c.n_mels, 20), ids)
    with pytest.raises(ValueError, match="attention_mask must be"):
        model(torch.randn(1, c.n_mels, 20), ids, attention_mask=torch.ones(1, 19))
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.randn(1, c.n_mels, 20), torch.tensor([[1, c.vocab_size]]))
    with pytest.raises(ValueError, match="labels"):
        model(torch.randn(1, c.n_mels, 20))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randn(1, c.n_mels, 20), torch.ones(1, c.max_seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=f"n_mels={c.n_mels}"):  # generate checks through the same encoder
        generate(model, torch.randn(1, c.n_mels - 1, 20), max_new_tokens=2, cpu_kernels=False)
