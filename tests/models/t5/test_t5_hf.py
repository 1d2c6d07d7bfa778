"""Our T5 against transformers' ``T5ForConditionalGeneration`` on the same small random weights.

Both FFN variants (T5 1.0's ReLU with the tied, rescaled head; T5 1.1's gated-GELU with its own
head): logits and loss to 1e-5 on a padded batch; greedy and beam-4 (length penalty 0.6 and 1.3,
``early_stopping=False`` as transformers' default) through our ``generate`` against transformers'
own ``generate``; a folder written by either side opens in the other.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glassformer import registry
from glassformer.generate import generate
from glassformer.models import load_model
from glassformer.models.base import IGNORE_INDEX
from glassformer.models.t5 import T5
from glassformer.models.t5.hf import (
    config_from_hf,
    config_to_hf,
    from_hf_state,
    save_pretrained,
    state_dict_from_hf,
)
from glassformer.utils.weights import WeightsError
from tests.models._hf import assert_same_tokens, favourite_token

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
V, PAD, EOS = 67, 0, 1
VARIANTS = {"t5-1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
            "t5-1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}  # fmt: skip


def _hf_model(**fields: object) -> transformers.T5ForConditionalGeneration:
    base = dict(
        vocab_size=V, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=3,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    torch.manual_seed(0)
    config = transformers.T5Config(**{**base, **fields})
    hf = transformers.T5ForConditionalGeneration._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():  # noise on every tensor, so a unit norm weight cannot hide a misplaced one
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        if not hf.config.scale_decoder_outputs:  # T5 1.1: its own head
            hf.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32) * 0.2)
    return hf


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request) -> tuple[transformers.T5ForConditionalGeneration, T5]:
    hf = _hf_model(**VARIANTS[request.param])
    ours = from_hf_state(hf.state_dict(), {**hf.config.to_dict(), **VARIANTS[request.param]}, attn_backend="eager").eval()
    assert ours.config.tie_embeddings == VARIANTS[request.param]["tie_word_embeddings"]
    return hf, ours


def _source(batch: int = 3, length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded sources ending in eos, long enough that offsets reach the far (logarithmic) buckets."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, V, (batch, length), generator=g)
    lengths = torch.tensor([length, 13, 5][:batch])
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[torch.arange(batch), lengths - 1] = EOS
    return ids.masked_fill(mask == 0, PAD), mask


def test_logits_and_loss_match(pair) -> None:
    hf, ours = pair
    ids, mask = _source()
    labels = torch.randint(2, V, (3, 16), generator=torch.Generator().manual_seed(2))
    labels[1, -3:] = IGNORE_INDEX
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        out = ours(input_ids=ids, attention_mask=mask, labels=labels)
        enc = ours.encode(ids, mask).hidden
    torch.testing.assert_close(enc, ref.encoder_last_hidden_state, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.logits, ref.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=ATOL, rtol=0)


def test_backends_agree(pair) -> None:
    """sdpa and the tiled flash path add the position bias the way the eager path does."""
    _, ours = pair
    ids, mask = _source()
    dec = torch.randint(2, V, (3, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ours(ids, mask, dec).logits
        for backend in ("sdpa", "flash"):
            for module in ours.modules():
                if hasattr(module, "backend"):
                    module.backend = backend
            torch.testing.assert_close(ours(ids, mask, dec).logits, expected, atol=1e-4, rtol=1e-4)
    for module in ours.modules():  # back to the fixture's eager path
        if hasattr(module, "backend"):
            module.backend = "eager"


def _hf_generate(hf, ids: torch.Tensor, mask: torch.Tensor, **kwargs: object):
    """transformers' generate without its cache, which assumes as many decoder layers as encoder ones."""
    with torch.no_grad():
        return hf.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12, pad_token_id=PAD, use_cache=False,
            return_dict_in_generate=True, output_scores=True, **kwargs,
        )  # fmt: skip


def _stop_token(ours: T5, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """The model's favourite token: as the stop token, it makes beams and rows finish early."""
    greedy = generate(ours, ids, mask, max_new_tokens=12, cpu_kernels=False).tokens
    return favourite_token(greedy)


def test_greedy_matches_transformers(pair) -> None:
    hf, ours = pair
    ids, mask = _source()
    stop = _stop_token(ours, ids, mask)
    ref = _hf_generate(hf, ids, mask, eos_token_id=stop)
    out = generate(ours, ids, mask, max_new_tokens=12, stop_token_ids=(stop,), pad_token_id=PAD, cpu_kernels=False)
    assert ref.sequences[0, 0] == PAD  # both start from the pad token
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    assert "stop_token" in out.finish_reasons


@pytest.mark.parametrize("length_penalty", [0.6, 1.3])
def test_beam_search_matches_transformers(pair, length_penalty: float) -> None:
    hf, ours = pair
    ids, mask = _source()
    stop = _stop_token(ours, ids, mask)
    kwargs = dict(num_beams=4, length_penalty=length_penalty)
    ref = _hf_generate(hf, ids, mask, eos_token_id=stop, **kwargs)
    assert transformers.GenerationConfig._get_default_generation_params()["early_stopping"] is False  # = ours
    out = generate(ours, ids, mask, strategy="beam", max_new_tokens=12, stop_token_ids=(stop,), pad_token_id=PAD,
                   cpu_kernels=False, **kwargs)  # fmt: skip
    fill = {PAD, stop}
    assert_same_tokens(out.tokens, ref.sequences, fill)
    if length_penalty < 1:  # short beams win: finished ones were scored and compared too
        assert "stop_token" in out.finish_reasons
    torch.testing.assert_close(torch.tensor(out.scores), ref.sequences_scores, rtol=1e-5, atol=1e-5)


def test_folders_open_both_ways(pair, tmp_path: Path) -> None:
    hf, ours = pair
    hf.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf", attn_backend="eager").eval()
    assert isinstance(back, T5) and back.config.tie_embeddings == ours.config.tie_embeddings
    save_pretrained(ours, tmp_path / "ours")
    again, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "ours", attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask = _source(2)
    dec = torch.randint(0, V, (2, 6))
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        torch.testing.assert_close(back(ids, mask, dec).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(again.eval()(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                                   expected, atol=ATOL, rtol=0)  # fmt: skip
    assert load_model(tmp_path / "ours", attn_backend="eager").config == ours.config


@pytest.mark.parametrize("name", ["t5-small", "t5-v1_1-small", "t5-multi30k-tiny"])
def test_config_round_trip_keeps_prefixes_and_sentinels(name: str) -> None:
    config = registry.get(name).make_config()
    assert config_from_hf(config_to_hf(config)) == config


def test_foreign_files_are_refused(pair) -> None:
    hf, ours = pair
    state, cfg = hf.state_dict(), hf.config.to_dict()
    with pytest.raises(ValueError, match="feed_forward_proj='gated-silu'"):
        config_from_hf({**cfg, "feed_forward_proj": "gated-silu"})
    with pytest.raises(ValueError, match="decoder_start_token_id=5"):
        config_from_hf({**cfg, "decoder_start_token_id": 5})
    with pytest.raises(WeightsError, match="does not know how to place"):
        state_dict_from_hf({**state, "encoder.block.0.layer.9.x.weight": torch.zeros(1)}, ours.config)
    if ours.config.tie_embeddings:
        with pytest.raises(WeightsError, match="lm_head.weight differs"):
            state_dict_from_hf({**state, "lm_head.weight": state["shared.weight"] + 1}, ours.config)
