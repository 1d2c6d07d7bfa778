"""BART against transformers' ``BartForConditionalGeneration`` on small random weights.

Logits (padded sources, 1e-5) and the loss; greedy and beam-4 decoding (length penalty 1 and 0.6)
through our ``generate`` against transformers' ``generate`` with BART's own generation settings
(start from ``</s>``, forced ``<s>``); our export loads in transformers and theirs in ours.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer.generate import generate
from glassformer.models import load_model
from glassformer.models.bart import Bart, shift_tokens_right
from glassformer.models.bart.hf import config_from_hf, save_pretrained, state_dict_from_hf
from glassformer.utils.weights import WeightsError
from tests.models._hf import assert_same_tokens, favourite_token

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB, PAD, BOS, EOS = 61, 1, 0, 2
MAX_NEW = 12


def _hf_model(**fields: object):
    cfg = transformers.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48, max_position_embeddings=40,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, forced_bos_token_id=BOS,
        forced_eos_token_id=None, **fields,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.BartForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # noise everywhere, so a misplaced bias or norm cannot hide
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        hf.final_logits_bias.normal_(std=0.5)
    hf.generation_config.forced_bos_token_id = BOS  # transformers 5 keeps decoding settings out of the config
    hf.generation_config.forced_eos_token_id = None
    return hf


def _ours_from(hf) -> Bart:
    config = config_from_hf(hf.config.to_dict(), hf.generation_config.to_dict(), attn_backend="eager")
    model = Bart(config).eval()
    model.load_state_dict(state_dict_from_hf(hf.state_dict(), config))
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "scale_embedding"])
def pair(request):
    hf = _hf_model(scale_embedding=request.param)
    return hf, _ours_from(hf)


def _sources() -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded sources ``<s> ... </s>`` of lengths 9, 6 and 4."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    for row, n in enumerate((9, 6, 4)):
        ids[row, 0], ids[row, n - 1] = BOS, EOS
        ids[row, n:], mask[row, n:] = PAD, 0
    return ids, mask


def test_logits_and_loss_match_transformers(pair) -> None:
    hf, ours = pair
    src, mask = _sources()
    labels = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(2))
    labels[2, 5:] = -100
    with torch.no_grad():
        ref = hf(input_ids=src, attention_mask=mask, labels=labels)
        out = ours(src, mask, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=0)
    dec = shift_tokens_right(labels, EOS, PAD)
    assert dec[:, 0].eq(EOS).all() and dec[2, 6] == PAD


def _stop_token(ours: Bart, src: torch.Tensor, mask: torch.Tensor) -> int:
    """The model's favourite token after the forced ``<s>``: as the stop token, rows and beams end early."""
    greedy = generate(ours, src, mask, max_new_tokens=MAX_NEW, cpu_kernels=False).tokens
    return favourite_token((row[1:] for row in greedy), skip=(BOS, PAD))


def _hf_generate(hf, src: torch.Tensor, mask: torch.Tensor, stop: int, **kwargs: object):
    with torch.no_grad():
        return hf.generate(
            input_ids=src, attention_mask=mask, max_new_tokens=MAX_NEW, eos_token_id=stop, do_sample=False,
            return_dict_in_generate=True, output_scores=True, **kwargs,
        )  # fmt: skip


def test_greedy_matches_transformers(pair) -> None:
    hf, ours = pair
    src, mask = _sources()
    stop = _stop_token(ours, src, mask)
    ref = _hf_generate(hf, src, mask, stop)
    assert (
        ref.sequences[:, 0].eq(EOS).all() and ref.sequences[:, 1].eq(BOS).all()
    )  # BART's start and forced <s>
    out = generate(
        ours, src, mask, max_new_tokens=MAX_NEW, stop_token_ids=(stop,), pad_token_id=PAD, cpu_kernels=False
    )
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    assert "stop_token" in out.finish_reasons


@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_beam_search_matches_transformers(pair, length_penalty: float) -> None:
    hf, ours = pair
    src, mask = _sources()
    stop = _stop_token(ours, src, mask)
    kwargs = dict(num_beams=4, length_penalty=length_penalty, early_stopping=False)
    ref = _hf_generate(hf, src, mask, stop, **kwargs)
    out = generate(ours, src, mask, strategy="beam", max_new_tokens=MAX_NEW, stop_token_ids=(stop,), pad_token_id=PAD,
                   cpu_kernels=False, **kwargs)  # fmt: skip
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    assert "stop_token" in out.finish_reasons
    torch.testing.assert_close(torch.tensor(out.scores), ref.sequences_scores, rtol=1e-5, atol=1e-5)


def test_exports_load_both_ways(pair, tmp_path: Path) -> None:
    hf, ours = pair
    save_pretrained(ours, tmp_path / "ours")
    again, info = transformers.BartForConditionalGeneration.from_pretrained(
        tmp_path / "ours", attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert (
        again.generation_config.forced_bos_token_id == BOS
        and again.generation_config.decoder_start_token_id == EOS
    )
    torch.testing.assert_close(again.final_logits_bias, ours.final_logits_bias)  # a non-zero bias travels
    hf.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf")
    assert isinstance(back, Bart) and back.config.forced_bos_token_id == BOS
    src, mask = _sources()
    dec = torch.full((3, 1), EOS)
    with torch.no_grad():
        torch.testing.assert_close(back(src, mask, dec).logits, hf(input_ids=src, attention_mask=mask, decoder_input_ids=dec).logits,
                                   atol=ATOL, rtol=0)  # fmt: skip


def test_untied_head_is_refused(pair) -> None:
    hf, ours = pair
    state = dict(hf.state_dict())
    state["lm_head.weight"] = state["model.shared.weight"] + 1.0
    with pytest.raises(WeightsError, match="lm_head.weight differs"):
        state_dict_from_hf(state, ours.config)


def test_configs_without_an_equivalent_are_refused() -> None:
    base = _hf_model().config.to_dict()
    with pytest.raises(ValueError, match="encoder_ffn_dim=48 != decoder_ffn_dim=64"):
        config_from_hf({**base, "decoder_ffn_dim": 64})
    with pytest.raises(ValueError, match="activation_function='swish'"):
        config_from_hf({**base, "activation_function": "swish"})
    with pytest.raises(ValueError, match="model_type='mbart'"):
        config_from_hf({**base, "model_type": "mbart"})
