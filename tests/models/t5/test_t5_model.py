"""T5's parts against transformers' (norm, position buckets), cached decoding, and the bad-input messages."""

from __future__ import annotations

import math

import pytest
import torch

from glassformer import registry
from glassformer.generate import generate
from glassformer.models.t5 import T5, T5Config, check_task_prefix, check_tokenizer, with_prefix
from glassformer.nn.norms import RMSNorm
from glassformer.nn.positional import relative_position_bucket
from glassformer.tokenizers.char import CharTokenizer
from glassformer.utils.config import ConfigError

t5_modeling = pytest.importorskip("transformers.models.t5.modeling_t5")


def _tiny(name: str = "t5-multi30k-tiny", **fields: object) -> T5:
    torch.manual_seed(0)
    preset = registry.get(name)
    model = preset.build(preset.make_config().replace(dropout=0.0, **fields)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_is_t5_layer_norm(dtype: torch.dtype) -> None:
    """Scale only, no mean, the variance in float32 whatever the input: T5LayerNorm's arithmetic."""
    ours, theirs = RMSNorm(24, eps=1e-6), t5_modeling.T5LayerNorm(24, eps=1e-6)
    with torch.no_grad():
        ours.weight.normal_()
        theirs.weight.copy_(ours.weight)
    x = (torch.randn(3, 5, 24) * 40 + 3).to(dtype)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    torch.testing.assert_close(ours(x), theirs(x), atol=0, rtol=0)


@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 12), (10, 20)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_position_buckets_are_t5s(num_buckets: int, max_distance: int, bidirectional: bool) -> None:
    offsets = torch.arange(-400, 401)[None]  # key - query, past the log buckets and max_distance
    expected = t5_modeling.T5Attention._relative_position_bucket(offsets, bidirectional, num_buckets, max_distance)
    assert torch.equal(relative_position_bucket(offsets, bidirectional, num_buckets, max_distance), expected)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_decoding_equals_recomputation(strategy: str) -> None:
    """The decoder bias continues after the cached positions: static, dynamic and no cache agree."""
    model = _tiny()
    src = torch.randint(2, 80, (3, 11), generator=torch.Generator().manual_seed(4))
    mask = (torch.arange(11)[None] < torch.tensor([[11], [7], [3]])).long()
    kwargs = dict(strategy=strategy, max_new_tokens=10, cpu_kernels=False, output_logits=strategy == "greedy")
    if strategy == "beam":
        kwargs.update(num_beams=3, length_penalty=0.7)
    ref = generate(model, src, mask, cache="none", **kwargs)
    for cache in ("static", "dynamic"):
        out = generate(model, src, mask, cache=cache, **kwargs)
        assert out.tokens == ref.tokens, cache
        if strategy == "greedy":
            torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    assert all(row[0] == model.config.pad_token_id for row in ref.sequences.tolist())  # T5 starts from pad


def test_tied_head_is_the_rescaled_embedding_and_untied_is_its_own() -> None:
    tied, untied = _tiny("t5-small-tiny"), _tiny("t5-v1_1-small-tiny")
    h = torch.randn(2, 3, 32)
    torch.testing.assert_close(tied.logits(h), h @ tied.shared.weight.T / math.sqrt(32))
    assert tied.lm_head is None and untied.lm_head is not None
    torch.testing.assert_close(untied.logits(h), h @ untied.lm_head.weight.T)
    assert not any(b is not None for _, m in untied.named_modules() for b in [getattr(m, "bias", None)]
                   if isinstance(m, torch.nn.Linear))  # fmt: skip  # T5 has no biases


def test_a_source_past_the_cap_is_refused_saying_why() -> None:
    model = _tiny()
    cap = model.config.max_seq_len
    with pytest.raises(ValueError, match=rf"max_seq_len={cap}.*no position table.*max_distance"):
        model(torch.full((1, cap + 1), 5), decoder_input_ids=torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the model's max_seq_len"):
        generate(model, torch.full((1, cap + 1), 5), max_new_tokens=2, cpu_kernels=False)


def test_empty_sources_are_refused() -> None:
    model = _tiny()
    dec = torch.zeros(2, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="empty source"):
        model(torch.zeros(2, 0, dtype=torch.long), decoder_input_ids=dec)
    with pytest.raises(ValueError, match=r"empty source: row\(s\) \[1\]"):
        model(torch.full((2, 4), 5), torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]), dec)
    tok = CharTokenizer.from_text("abc xyz:")
    with pytest.raises(ValueError, match=r"empty source: text\(s\) \[1\]"):
        model.sources(["abc", "  "], tok, prefix="translate English to German: ")


def test_a_tokenizer_too_big_for_the_model_is_refused() -> None:
    model = _tiny()
    big = CharTokenizer([chr(0x4E00 + i) for i in range(model.config.vocab_size + 5)])
    with pytest.raises(ValueError, match=rf"tokenizer has {model.config.vocab_size + 5} tokens.*vocab_size="):
        check_tokenizer(model.config, big)
    with pytest.raises(ValueError, match="does not fit this model"):
        model(torch.tensor([[3, model.config.vocab_size + 2]]), decoder_input_ids=torch.zeros(1, 1, dtype=torch.long))


def test_an_untrained_prefix_warns_naming_the_known_ones() -> None:
    config = registry.get("t5-multi30k").make_config()
    with pytest.warns(UserWarning, match=r"'translate English to French: ' is not a task prefix.*did you mean"):
        assert not check_task_prefix(config, "translate English to French: A dog.")
    with pytest.warns(UserWarning, match="summarize: "):
        with_prefix(config, "summarize: ", ["A man is riding a bike."])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_task_prefix(config, "translate German to English: Ein Hund.")
        assert check_task_prefix(config.replace(task_prefixes=()), "anything goes")  # T5 1.1: none recorded
        tok = CharTokenizer.from_text("A dog.translate Egihnsl:Gmr")
        ids = _tiny().sources(["A dog."], tok, prefix="translate English to German: ")
        assert ids[0][-1] == config.eos_token_id and len(ids[0]) == len("translate English to German: A dog.") + 1


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="activation='gelu'.*geglu_tanh"):
        T5Config(activation="gelu")
    with pytest.raises(ConfigError, match="sentinels counting down from sentinel_start_id=50"):
        T5Config(vocab_size=60, sentinel_start_id=50, n_sentinels=100)
    with pytest.raises(ConfigError, match="overlap pad/eos"):
        T5Config(vocab_size=60, sentinel_start_id=59, n_sentinels=60)
    assert T5Config().sentinel_ids[:2] == (32099, 32098) and T5Config().decoder_start_token_id == 0
