"""The GPT model itself: KV cache equals recomputation, left padding is invisible, bad input is refused."""

from __future__ import annotations

import pytest
import torch

from glassformer.models.gpt import GPT, GPTConfig, parameter_breakdown, parameter_report
from glassformer.utils.config import ConfigError

VARIANTS = {
    "gpt2": GPTConfig(vocab_size=61, max_seq_len=40, n_layers=2, n_heads=4, dim=32),
    "llama-gqa": GPTConfig(
        vocab_size=61, max_seq_len=40, n_layers=2, n_heads=4, n_kv_heads=2, dim=32, pos_encoding="rope",
        norm="rmsnorm", activation="swiglu", bias=False, tie_embeddings=False,
    ),
}


def _model(name: str) -> GPT:
    torch.manual_seed(0)
    return GPT(VARIANTS[name]).eval()


def _left_padded_batch(lengths: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(1, vocab, (n,))
        mask[row, width - n :] = 1
    return ids, mask


@pytest.mark.parametrize("kind", ["dynamic", "static"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_cached_decoding_equals_recomputation(name: str, kind: str) -> None:
    model = _model(name)
    lengths = [5, 9, 3]
    ids, mask = _left_padded_batch(lengths, model.config.vocab_size)
    steps = 8
    cache = model.new_cache(len(lengths), max_len=ids.shape[1] + steps, kind=kind)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, cache=cache, logits_to_keep=1)
        for step in range(steps):
            full = model(ids, attention_mask=mask).logits[:, -1]  # recompute everything, no cache
            torch.testing.assert_close(out.logits[:, -1], full, atol=1e-5, rtol=0, msg=f"step {step}")
            # each row alone, without any padding, predicts the same next token distribution
            for row, n in enumerate(lengths):
                alone = model(ids[row : row + 1, -(n + step) :]).logits[0, -1]
                torch.testing.assert_close(full[row], alone, atol=1e-5, rtol=0, msg=f"row {row} step {step}")
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            ids = torch.cat([ids, nxt], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            out = model(nxt, attention_mask=mask, cache=cache)
    assert cache.seq_len() == ids.shape[1]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_cache_without_mask_continues_positions(name: str) -> None:
    model = _model(name)
    ids = torch.randint(0, 61, (2, 12))
    cache = model.new_cache(2)
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :7], cache=cache).logits
        rest = model(ids[:, 7:], cache=cache).logits
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, atol=1e-5, rtol=0)


def test_loss_ignores_minus_100_and_matches_cross_entropy() -> None:
    model = _model("gpt2")
    ids = torch.randint(0, 61, (2, 10))
    targets = torch.randint(0, 61, (2, 10))
    targets[0, :4] = -100
    out = model(ids, targets=targets)
    keep = targets != -100
    ref = torch.nn.functional.cross_entropy(out.logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, ref)


def test_attention_weights_and_logits_to_keep() -> None:
    model = _model("llama-gqa")
    ids = torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        out = model(ids, return_weights=True)
        last = model(ids, logits_to_keep=2).logits
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 6, 6)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 6))
    assert torch.triu(out.attentions[1][0, 0], diagonal=1).abs().max() == 0  # causal
    torch.testing.assert_close(last, out.logits[:, -2:])


def test_tied_embeddings_and_parameter_report() -> None:
    model = _model("gpt2")
    assert model.lm_head.weight is model.wte.weight
    parts = parameter_breakdown(model)
    assert sum(parts.values()) == model.num_parameters()
    assert parts["lm_head (untied)"] == 0 and parts["position embedding"] == 40 * 32
    untied = _model("llama-gqa")
    assert parameter_breakdown(untied)["lm_head (untied)"] == 61 * 32
    assert "total" in parameter_report(untied)


def test_gpt2_124m_parameter_count() -> None:
    """The preset's count equals GPT-2 small's published 124,439,808 (meta device: no memory)."""
    from glassformer.registry import get

    with torch.device("meta"):
        model = get("gpt2").build(get("gpt2").make_config())
    assert model.num_parameters() == 124_439_808


def test_save_load_roundtrip_and_other_family_refused(tmp_path) -> None:
    model = _model("llama-gqa")
    model.save(tmp_path / "gpt")
    again = GPT.load(tmp_path / "gpt")
    ids = torch.randint(0, 61, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits, atol=0, rtol=0)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"family": "bert"}')
    with pytest.raises(ValueError, match="bert checkpoint, not a gpt one"):
        GPT.load(tmp_path / "bert")


def test_bad_input_is_refused_clearly() -> None:
    model = _model("gpt2")
    with pytest.raises(ValueError, match="longer than the model's context of max_seq_len=40"):
        model(torch.zeros(1, 41, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"30 cached \+ 11 new"):
        model(torch.zeros(1, 11, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="empty"):
        model(torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(TypeError, match="integer token ids"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="vocabulary has 61"):
        model(torch.tensor([[3, 61]]))
    with pytest.raises(ValueError, match=r"\(batch, seq_len\)"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="targets have shape"):
        model(torch.zeros(2, 3, dtype=torch.long), targets=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="static cache max_len"):
        model.new_cache(1, max_len=41, kind="static")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(dim=30, n_heads=4), "dim=30 is not divisible by n_heads=4"),
        (dict(n_kv_heads=3), "multiple of n_kv_heads=3"),
        (dict(pos_encoding="alibi"), "pos_encoding='alibi'"),
        (dict(norm="batchnorm"), "norm='batchnorm'"),
        (dict(activation="tanh"), "activation='tanh'"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(eos_token_id=99), "eos_token_id=99 is outside"),
    ],
)
def test_config_errors_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        VARIANTS["gpt2"].replace(**changes)
    with pytest.raises(ConfigError, match="unknown key"):
        GPTConfig.from_dict({"n_layer": 2})


def test_llama_ffn_rule_and_derived_fields() -> None:
    c = GPTConfig(dim=128, n_heads=4, activation="swiglu")
    assert c.ffn_size == 384 and c.kv_heads == 4 and c.head_size == 32
    assert c.replace(dim=256).ffn_size == 704  # derived again, never stale
    assert GPTConfig(dim=128, n_heads=4).ffn_size == 512
