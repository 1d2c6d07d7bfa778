"""Our Whisper against transformers' ``WhisperForConditionalGeneration`` on the same random weights.

Encoder states, logits and the loss to 1e-5; greedy and beam-4 decoding through our ``generate``
against transformers' own ``GenerationMixin.generate`` (the base path: Whisper's override adds
language detection and timestamp logic that a raw model comparison must leave out); a folder
written by either side opens in the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer.generate import generate
from glassformer.models import load_model
from glassformer.models.base import IGNORE_INDEX
from glassformer.models.whisper import Whisper
from glassformer.models.whisper.hf import POSITIONS_KEY, from_hf_state, save_pretrained
from glassformer.utils.weights import WeightsError
from tests.models._hf import assert_same_tokens, favourite_token

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
N_MELS, POSITIONS = 20, 12  # 24 frames
START, EOS, PAD = 2, 1, 0


def _hf_config(**fields: object) -> transformers.WhisperConfig:
    base = dict(
        vocab_size=61, d_model=48, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=80, decoder_ffn_dim=80, num_mel_bins=N_MELS,
        max_source_positions=POSITIONS, max_target_positions=24, pad_token_id=PAD, bos_token_id=START,
        eos_token_id=EOS, decoder_start_token_id=START, suppress_tokens=None, begin_suppress_tokens=None,
        dropout=0.0, attention_dropout=0.0,
    )  # fmt: skip
    return transformers.WhisperConfig(**{**base, **fields})


def _hf_model(**fields: object) -> transformers.WhisperForConditionalGeneration:
    torch.manual_seed(0)
    hf = transformers.WhisperForConditionalGeneration(_hf_config(**fields)).eval()
    with torch.no_grad():  # noise on every learned tensor (not the sinusoids), so no zero bias hides a mistake
        for name, p in hf.named_parameters():
            if "embed_positions" not in name or "decoder" in name:
                p.add_(torch.randn_like(p) * 0.3)
    hf.config._attn_implementation = "eager"
    return hf


@pytest.fixture(scope="module")
def pair() -> tuple[transformers.WhisperForConditionalGeneration, Whisper]:
    hf = _hf_model()
    ours = from_hf_state(hf.state_dict(), hf.config.to_dict()).eval()
    return hf, ours


def _features(batch: int = 3, frames: int = 2 * POSITIONS) -> torch.Tensor:
    return torch.randn(batch, N_MELS, frames, generator=torch.Generator().manual_seed(1))


def test_encoder_states_logits_and_loss_match(pair) -> None:
    hf, ours = pair
    feats = _features()
    labels = torch.randint(3, 61, (3, 7), generator=torch.Generator().manual_seed(2))
    labels[0, -2:] = IGNORE_INDEX
    with torch.no_grad():
        ref = hf(input_features=feats, labels=labels)
        out = ours(input_features=feats, labels=labels)
        enc = ours.encode(feats).hidden
    torch.testing.assert_close(enc, ref.encoder_last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=0)


def test_fewer_frames_use_the_first_positions() -> None:
    """Ours with room for 12 positions on 16 frames = transformers built for exactly 8 positions."""
    hf = _hf_model(max_source_positions=8)
    state = {k: v for k, v in hf.state_dict().items() if k != POSITIONS_KEY}  # ours computes the table
    ours = from_hf_state(state, {**hf.config.to_dict(), "max_source_positions": POSITIONS}).eval()
    feats = _features(2, 16)
    ids = torch.randint(0, 61, (2, 5))
    with torch.no_grad():
        ref = hf(input_features=feats, decoder_input_ids=ids)
        out = ours(input_features=feats, decoder_input_ids=ids)
    # logits reach about 5 here: on AVX-512 matmul kernels one in 600 lands 1.05e-5 off, a 2e-6 relative error
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=1e-6)


def _base_generate(hf, feats: torch.Tensor, **kwargs: object):
    start = torch.full((feats.shape[0], 1), START)
    with torch.no_grad():
        return transformers.GenerationMixin.generate(
            hf, input_features=feats, decoder_input_ids=start, do_sample=False, pad_token_id=PAD,
            return_dict_in_generate=True, output_scores=True, **kwargs,
        )  # fmt: skip


def _stop_token(ours: Whisper, feats: torch.Tensor) -> int:
    """The model's favourite token: as the stop token, it makes beams and rows finish early."""
    greedy = generate(ours, feats, max_new_tokens=12, cpu_kernels=False).tokens
    return favourite_token(greedy)


def test_greedy_matches_transformers(pair) -> None:
    hf, ours = pair
    feats = _features()
    stop = _stop_token(ours, feats)
    ref = _base_generate(hf, feats, max_new_tokens=12, eos_token_id=stop)
    out = generate(ours, feats, max_new_tokens=12, stop_token_ids=(stop,), pad_token_id=PAD, cpu_kernels=False)
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    assert "stop_token" in out.finish_reasons  # a finished row was compared too


@pytest.mark.parametrize("length_penalty", [1.0, 0.5])
def test_beam_search_matches_transformers(pair, length_penalty: float) -> None:
    hf, ours = pair
    feats = _features()
    stop = _stop_token(ours, feats)
    kwargs = dict(num_beams=4, length_penalty=length_penalty, early_stopping=False)
    ref = _base_generate(hf, feats, max_new_tokens=12, eos_token_id=stop, **kwargs)
    out = generate(ours, feats, strategy="beam", max_new_tokens=12, stop_token_ids=(stop,), pad_token_id=PAD,
                   cpu_kernels=False, **kwargs)  # fmt: skip
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    assert "stop_token" in out.finish_reasons
    torch.testing.assert_close(torch.tensor(out.scores), ref.sequences_scores, rtol=1e-5, atol=1e-5)


def test_transformers_folder_loads_and_ours_loads_in_transformers(pair, tmp_path: Path) -> None:
    hf, ours = pair
    hf.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    assert isinstance(back, Whisper)
    save_pretrained(ours, tmp_path / "ours")
    again, info = transformers.WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "ours", attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    feats, ids = _features(2), torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        expected = hf(input_features=feats, decoder_input_ids=ids).logits
        torch.testing.assert_close(back.eval()(feats, ids).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(again.eval()(input_features=feats, decoder_input_ids=ids).logits, expected,
                                   atol=ATOL, rtol=0)  # fmt: skip


def test_float16_state_loads_into_float32(pair) -> None:
    """A converted half-precision checkpoint (CTranslate2's tiny.en is float16) widens on load."""
    hf, _ = pair
    half = {k: v.half() for k, v in hf.state_dict().items()}
    ours = from_hf_state(half, hf.config.to_dict())
    assert ours.conv1.weight.dtype == torch.float32
    assert torch.equal(ours.token_embedding.weight, half["model.decoder.embed_tokens.weight"].float())


def test_foreign_tables_and_configs_are_refused(pair) -> None:
    hf, _ = pair
    state, cfg = hf.state_dict(), hf.config.to_dict()
    with pytest.raises(WeightsError, match="sinusoids"):
        from_hf_state({**state, POSITIONS_KEY: state[POSITIONS_KEY] + 0.1}, cfg)
    with pytest.raises(WeightsError, match="ties them"):
        from_hf_state({**state, "proj_out.weight": state["proj_out.weight"] + 1}, cfg)
    with pytest.raises(WeightsError, match="does not know how to place"):
        from_hf_state({**state, "model.encoder.extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match="decoder_attention_heads"):
        from_hf_state(state, {**cfg, "decoder_attention_heads": 2})
    with pytest.raises(ValueError, match="scale_embedding"):
        from_hf_state(state, {**cfg, "scale_embedding": True})
