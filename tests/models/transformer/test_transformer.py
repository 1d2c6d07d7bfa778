"""The original encoder-decoder: equal to torch.nn.Transformer with the same weights, and usable."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer import registry
from glassformer.models.transformer import Transformer, TransformerConfig, example_batch
from glassformer.nn.cache import DynamicCache, StaticCache
from glassformer.nn.masks import causal_mask
from glassformer.utils.config import ConfigError
from tests.nn.torch_copy import copy_stack

ATOL = 1e-5
V, S, T = 50, 9, 7


def _config(**overrides) -> TransformerConfig:
    base = dict(vocab_size=V, tgt_vocab_size=V, dim=32, n_heads=4, n_layers=2, n_decoder_layers=3,
                ffn_dim=64, dropout=0.0, max_seq_len=64)
    return TransformerConfig(**{**base, **overrides})


def _model_and_torch(backend: str = "sdpa") -> tuple[Transformer, torch.nn.Transformer]:
    torch.manual_seed(0)
    model = Transformer(_config(attn_backend=backend)).eval()
    with torch.no_grad():  # norms start at 1/0 and biases near 0: randomize so that copying them is checked
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(std=0.5 if name.endswith("bias") else 1.0)
    ref = torch.nn.Transformer(32, 4, 2, 3, 64, dropout=0.0, batch_first=True).eval()
    copy_stack(model.encoder, ref.encoder)
    copy_stack(model.decoder, ref.decoder)
    return model, ref


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(3, V, (3, S), generator=g), torch.randint(3, V, (3, T), generator=g)
    src_am = (torch.arange(S)[None] < torch.tensor([[S], [5], [2]])).long()  # right padding
    tgt_am = (torch.arange(T)[None] < torch.tensor([[T], [T], [3]])).long()
    return {"src": src.masked_fill(src_am == 0, 0), "tgt": tgt.masked_fill(tgt_am == 0, 0),
            "src_attention_mask": src_am, "tgt_attention_mask": tgt_am}


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("backend", ["eager", "sdpa", "flash"])
def test_matches_torch_transformer(backend: str) -> None:
    """Same weights, same embedded inputs, eval mode: same encoder memory, decoder states and log-probs."""
    model, ref = _model_and_torch(backend)
    batch = _batch()
    src_pad, tgt_pad = batch["src_attention_mask"] == 0, batch["tgt_attention_mask"] == 0
    with torch.no_grad():
        out = model(**batch)
        xs, xt = model.embed_source(batch["src"]), model.embed_target(batch["tgt"])
        memory = ref.encoder(xs, src_key_padding_mask=src_pad)
        expected = ref(
            xs, xt, tgt_mask=~causal_mask(T, T), src_key_padding_mask=src_pad,
            tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True,
        )
        ours_memory = model.encode(batch["src"], batch["src_attention_mask"]).hidden
    real = ~src_pad  # torch's fast path writes zeros at padded encoder positions; compare the rest
    torch.testing.assert_close(ours_memory[real], memory[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(out.hidden_states, expected, atol=ATOL, rtol=0)
    log_probs = torch.log_softmax(expected @ model.generator.proj.weight.T, dim=-1)
    torch.testing.assert_close(torch.log_softmax(out.logits, dim=-1), log_probs, atol=ATOL, rtol=0)
    # the inputs: token embedding * sqrt(dim) + the sinusoidal table (dropout is 0 here)
    torch.testing.assert_close(xs, model.src_embed(batch["src"]) * 32**0.5 + model.positions.table[:S])


def test_matches_torch_stacks_with_explicit_masks() -> None:
    """Arbitrary src/memory masks (not only causal and padding) go through both stacks alike."""
    model, ref = _model_and_torch()
    g = torch.Generator().manual_seed(2)
    xs, xt = torch.randn(2, S, 32, generator=g), torch.randn(2, T, 32, generator=g)
    src_allowed = torch.rand(S, S, generator=g) > 0.4
    src_allowed.fill_diagonal_(True)
    mem_allowed = torch.rand(T, S, generator=g) > 0.4
    mem_allowed[:, 0] = True
    with torch.no_grad():
        memory = model.encoder(xs, mask=src_allowed).hidden
        out = model.decoder(xt, is_causal=True, context=memory, context_mask=mem_allowed).hidden
        ref_memory = ref.encoder(xs, mask=~src_allowed)
        ref_out = ref.decoder(xt, ref_memory, tgt_mask=~causal_mask(T, T), memory_mask=~mem_allowed)
    torch.testing.assert_close(memory, ref_memory, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_loss_is_label_smoothed_cross_entropy(smoothing: float) -> None:
    torch.manual_seed(0)
    model = Transformer(_config(label_smoothing=smoothing))
    batch = _batch()
    labels = torch.randint(3, V, (3, T)).masked_fill(batch["tgt_attention_mask"] == 0, 0)  # 0 = pad_token_id
    labels[0, 0] = -100
    out = model(**batch, labels=labels)
    flat_lp, flat_labels = torch.log_softmax(out.logits, dim=-1).reshape(-1, V), labels.masked_fill(labels == 0, -100).reshape(-1)
    expected = F.cross_entropy(flat_lp, flat_labels, ignore_index=-100, label_smoothing=smoothing)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.metrics["nll"], F.nll_loss(flat_lp, flat_labels, ignore_index=-100))
    # padded and -100 positions contribute nothing
    changed = labels.clone()
    changed[labels <= 0] = 7
    assert not torch.allclose(model(**batch, labels=changed).loss, out.loss)


@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_decoding_with_cache_equals_full_decode(cache_kind: str) -> None:
    model, _ = _model_and_torch()
    batch = _batch()
    src_am = batch["src_attention_mask"]
    with torch.no_grad():
        memory = model.encode(batch["src"], src_am).hidden
        full = model.decode(batch["tgt"], memory, src_am).hidden
        cache = DynamicCache() if cache_kind == "dynamic" else StaticCache(3, 3, 4, T, 8)
        steps = [model.decode(batch["tgt"][:, :3], memory, src_am, cache=cache).hidden]  # a 3-token prefix
        steps += [model.decode(batch["tgt"][:, t : t + 1], memory, src_am, cache=cache).hidden for t in range(3, T)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)


def _reverse_task() -> dict[str, torch.Tensor]:
    """Six sources of 2 to 5 tokens (right-padded); each target is its source reversed, then eos."""
    g = torch.Generator().manual_seed(3)
    lengths = [5, 5, 4, 3, 5, 2]
    src = torch.zeros(6, 5, dtype=torch.long)
    gold = torch.zeros(6, 6, dtype=torch.long)  # pad_token_id = 0 after eos
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, 12, (n,), generator=g)
        src[row, :n] = tokens
        gold[row, :n] = tokens.flip(0)
        gold[row, n] = 2  # eos_token_id
    tgt = torch.cat([torch.full((6, 1), 1), gold[:, :-1]], dim=1)  # bos, then the gold prefix
    return {"src": src, "tgt": tgt, "src_attention_mask": (src != 0).long(), "labels": gold}


def test_learns_to_reverse_and_greedy_translate_stops_at_eos() -> None:
    """Sixty steps on six sequences: the model memorizes them, and greedy decoding (with a cache)
    reproduces every target up to eos, pads rows that finished, and stops once all have; it agrees
    with decoding that re-runs the decoder over the whole prefix at every step."""
    torch.manual_seed(0)
    model = Transformer(_config(vocab_size=16, tgt_vocab_size=16, label_smoothing=0.0, n_decoder_layers=2))
    data = _reverse_task()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model(**data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    src, src_am = data["src"], data["src_attention_mask"]
    out = model.greedy_translate(src, src_am, max_new_tokens=10)
    assert torch.equal(out, data["labels"]), f"loss {loss.item():.3f}\n{out}\n{data['labels']}"
    with torch.no_grad():
        memory = model.encode(src, src_am).hidden
        prefix = torch.full((6, 1), 1)
        for _ in range(6):
            nxt = model.generator(model.decode(prefix, memory, src_am).hidden[:, -1]).argmax(-1)
            prefix = torch.cat([prefix, nxt[:, None]], dim=1)
    naive = prefix[:, 1:]
    for row in naive:
        row[int((row == 2).nonzero()[0]) + 1 :] = 0  # greedy_translate pads after the first eos
    assert torch.equal(naive, out)


def test_config_checks_name_field_and_value() -> None:
    with pytest.raises(ConfigError, match=r"TransformerConfig.dim=30 is not divisible by n_heads=4"):
        _config(dim=30)
    with pytest.raises(ConfigError, match=r"share_embeddings=True needs one joint vocabulary.*50 != tgt_vocab_size=60"):
        _config(tgt_vocab_size=60)
    _config(tgt_vocab_size=60, share_embeddings=False)
    with pytest.raises(ConfigError, match=r"TransformerConfig.n_layers must be a positive integer, got 0"):
        _config(n_layers=0)
    with pytest.raises(ConfigError, match=r"TransformerConfig.dropout must be in \[0, 1\), got 1.5"):
        _config(dropout=1.5)
    with pytest.raises(ConfigError, match=r"TransformerConfig.eos_token_id=50 is not a token id"):
        _config(eos_token_id=50)
    with pytest.raises(ConfigError, match=r"TransformerConfig.attn_backend='cuda'"):
        _config(attn_backend="cuda")


def test_bad_inputs_name_the_problem() -> None:
    model = Transformer(_config())
    src = torch.randint(3, V, (2, 5))
    with pytest.raises(ValueError, match=r"src holds token ids in \[\d+, 50\] but the vocabulary has 50 entries"):
        model(src.index_fill(1, torch.tensor([0]), V).clamp(min=3), src)
    with pytest.raises(ValueError, match=r"src_attention_mask must have shape \(2, 5\) \(batch, keys\), got \(2, 4\)"):
        model(src, src, src_attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"needs 70 positions but the sinusoidal positional table has max_len=64"):
        model(torch.randint(3, V, (1, 70)), src[:1])
    with pytest.raises(ValueError, match=r"labels must have the shape of tgt \(2, 5\), got \(2, 4\)"):
        model(src, src, labels=src[:, :4])


def test_shared_embeddings_and_save_load(tmp_path) -> None:
    torch.manual_seed(0)
    model = Transformer(_config()).eval()
    assert model.generator.proj.weight is model.src_embed.weight is model.tgt_embed.weight
    untied = Transformer(_config(share_embeddings=False))
    assert untied.num_parameters() == model.num_parameters() + 2 * V * 32
    model.save(tmp_path / "m")
    loaded = Transformer.load(tmp_path / "m").eval()
    assert loaded.generator.proj.weight is loaded.src_embed.weight
    batch = _batch()
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_presets_are_registered() -> None:
    base = registry.get("transformer-base").make_config()
    assert (base.dim, base.n_heads, base.n_layers, base.n_decoder_layers, base.ffn_dim) == (512, 8, 6, 6, 2048)
    tiny = registry.get("transformer-base-tiny")
    config = tiny.make_config()
    batch = tiny.example_batch(config)
    assert batch == {} or set(batch) == {"src", "tgt", "src_attention_mask", "tgt_attention_mask", "labels"}
    out = tiny.build(config)(**example_batch(config))
    assert out.loss is not None and out.logits.shape == (2, 6, config.tgt_vocab_size)
