"""BART's own behaviour: cached decoding equals recomputation, the forced ``<s>``, presets, bad input."""

from __future__ import annotations

import pytest
import torch

from glassformer import registry
from glassformer.generate import generate
from glassformer.models.bart import Bart, BartConfig, example_batch
from glassformer.utils.config import ConfigError


@pytest.fixture(scope="module")
def model() -> Bart:
    torch.manual_seed(0)
    config = registry.get("bart-base-tiny").make_config().replace(dropout=0.0, attn_dropout=0.0)
    m = Bart(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m


def _batch(model: Bart) -> dict[str, torch.Tensor]:
    return example_batch(model.config, batch_size=3)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_decoding_equals_recomputation(model: Bart, strategy: str) -> None:
    b = _batch(model)
    kwargs = dict(strategy=strategy, max_new_tokens=10, cpu_kernels=False, output_logits=True)
    if strategy == "beam":
        kwargs.update(num_beams=3, length_penalty=0.7)
    runs = {
        c: generate(model, b["input_ids"], b["attention_mask"], cache=c, **kwargs)
        for c in ("none", "static", "dynamic")
    }
    for kind in ("static", "dynamic"):
        assert runs[kind].tokens == runs["none"].tokens, kind
        if strategy == "greedy":
            torch.testing.assert_close(runs[kind].logits, runs["none"].logits, atol=1e-5, rtol=0)


def test_first_token_is_forced_to_bos_unless_turned_off(model: Bart) -> None:
    b = _batch(model)
    out = generate(model, b["input_ids"], b["attention_mask"], max_new_tokens=4, cpu_kernels=False)
    assert out.sequences[:, 0].eq(model.config.decoder_start_token_id).all()
    assert all(row[0] == model.config.bos_token_id for row in out.tokens)
    free = Bart(model.config.replace(forced_bos_token_id=None)).eval()
    free.load_state_dict(model.state_dict())
    firsts = generate(free, b["input_ids"], b["attention_mask"], max_new_tokens=1, cpu_kernels=False).tokens
    with torch.no_grad():  # unforced, the first token is the plain arg-max of forward's logits
        start = torch.full((3, 1), model.config.decoder_start_token_id)
        logits = free(b["input_ids"], b["attention_mask"], start).logits[:, 0]
    assert [row[0] for row in firsts] == logits.argmax(-1).tolist()


def test_label_smoothing_changes_the_loss_not_the_nll(model: Bart) -> None:
    b = example_batch(model.config)
    smooth = Bart(model.config.replace(label_smoothing=0.1)).eval()
    smooth.load_state_dict(model.state_dict())
    plain, smoothed = model(**b), smooth(**b)
    torch.testing.assert_close(smoothed.metrics["nll"], plain.loss)
    assert not torch.isclose(smoothed.loss, plain.loss)
    smoothed.loss.backward()
    assert smooth.embed_tokens.weight.grad.isfinite().all()


def test_multi30k_preset_size() -> None:
    preset = registry.get("bart-multi30k")
    n = preset.build(preset.make_config()).num_parameters()
    assert 3e6 <= n <= 8e6, n


def test_source_longer_than_the_positions_is_refused(model: Bart) -> None:
    long = torch.full((1, model.config.max_seq_len + 1), 5)
    with pytest.raises(ValueError, match=r"needs 65 positions but BART has max_seq_len=64"):
        model(long, decoder_input_ids=torch.tensor([[2]]))
    with pytest.raises(ValueError, match=r"longer than the model's max_seq_len=64"):
        generate(model, long, cpu_kernels=False)


def test_empty_source_is_refused(model: Bart) -> None:
    with pytest.raises(ValueError, match="input_ids has no tokens"):
        model(torch.zeros((2, 0), dtype=torch.long), decoder_input_ids=torch.tensor([[2], [2]]))


class _Tokenizer:
    vocab_size = 100


def test_tokenizer_larger_than_the_vocabulary_is_refused(model: Bart) -> None:
    with pytest.raises(ValueError, match="tokenizer has 100 tokens but the model's vocab_size is 64"):
        model.check_tokenizer(_Tokenizer())
    with pytest.raises(ValueError, match=r"token ids in \[5, 70\] but the model's vocab_size is 64"):
        model(torch.tensor([[5, 70]]), decoder_input_ids=torch.tensor([[2]]))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="BartConfig.forced_bos_token_id=99"):
        BartConfig(vocab_size=64, forced_bos_token_id=99)
    with pytest.raises(ConfigError, match="BartConfig.activation='swiglu'"):
        BartConfig(activation="swiglu")
