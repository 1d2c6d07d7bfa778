"""``generate`` on an encoder-decoder (the 2017 Transformer): the source is encoded once, the
cross-attention keys/values are projected once, and the cached paths equal recomputation.

The model is the ``transformer-base-tiny`` preset with random weights, untied output head
(a tied head mostly repeats the input token), on a right-padded batch of three sources.
"""

from __future__ import annotations

import pytest
import torch

from glassformer import registry
from glassformer.generate import generate, stream
from glassformer.models.transformer import Transformer
from glassformer.nn.cache import DynamicCache, EncoderDecoderCache, EncoderState

SOURCES = [[5, 9, 11, 30, 41, 7], [8, 3, 60], [12, 13, 14, 15]]
N_NEW = 14
STOP = 34  # greedy reaches it at step 10 in row 1 only; beams end with it or at the length limit
ATOL = 1e-5
SAMPLE = dict(strategy="sample", seed=0, temperature=0.8, top_k=20, top_p=0.9)
BEAM = dict(strategy="beam", num_beams=4, length_penalty=0.6, stop_token_ids=(STOP,))
STRATEGIES = {
    "greedy": dict(strategy="greedy"),
    "greedy-penalty": dict(strategy="greedy", repetition_penalty=1.3),
    "sample": SAMPLE,
    "beam": BEAM,
    "beam-early": dict(BEAM, length_penalty=2.0, early_stopping=True),
}


@pytest.fixture(scope="module")
def model() -> Transformer:
    preset = registry.get("transformer-base-tiny")
    torch.manual_seed(2)
    return preset.build(preset.make_config().replace(share_embeddings=False)).eval()


def sources() -> tuple[torch.Tensor, torch.Tensor]:
    """The three sources right-padded with id 0, and their mask."""
    width = max(len(s) for s in SOURCES)
    ids = torch.zeros((len(SOURCES), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(SOURCES):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_cached_tokens_and_logits_equal_uncached_at_every_step(model, name):
    ids, mask = sources()
    runs = {
        cache: generate(model, ids, mask, max_new_tokens=N_NEW, cache=cache, output_logits=True, **STRATEGIES[name])
        for cache in ("none", "dynamic", "static")
    }
    reference = runs["none"]
    rows = len(SOURCES) * (4 if name.startswith("beam") else 1)
    assert reference.logits.shape[:2] == (rows, max(len(t) for t in reference.tokens))
    for cache in ("dynamic", "static"):
        assert runs[cache].tokens == reference.tokens
        torch.testing.assert_close(runs[cache].logits, reference.logits, atol=ATOL, rtol=0)
        if reference.scores is not None:
            assert runs[cache].scores == pytest.approx(reference.scores, abs=1e-5)
        assert torch.equal(runs[cache].sequences, reference.sequences)
    assert len({tuple(t) for t in reference.tokens}) == len(SOURCES)  # the rows do differ


def test_greedy_equals_a_hand_written_loop(model):
    """Encode once, re-run the decoder over the whole prefix each step, take the arg-max."""
    ids, mask = sources()
    out = generate(model, ids, mask, max_new_tokens=N_NEW, output_logits=True)
    with torch.no_grad():
        memory = model.encode(ids, mask).hidden
        prefix = torch.full((len(SOURCES), 1), model.config.bos_token_id)
        logits = []
        for _ in range(N_NEW):
            step = model.generator(model.decode(prefix, memory, mask).hidden[:, -1])  # (B, V)
            logits.append(step)
            prefix = torch.cat([prefix, step.argmax(-1, keepdim=True)], dim=1)
    assert out.tokens == prefix[:, 1:].tolist()
    torch.testing.assert_close(out.logits, torch.stack(logits, dim=1), atol=ATOL, rtol=0)
    assert out.prompt_length == 1 and torch.equal(out.sequences, prefix)  # the decoder's sequence, no source


def test_a_padded_source_decodes_as_it_would_alone(model):
    ids, mask = sources()
    batched = generate(model, ids, mask, max_new_tokens=N_NEW, output_logits=True)
    assert generate(model, SOURCES, max_new_tokens=N_NEW).tokens == batched.tokens  # lists are right-padded
    for row, source in enumerate(SOURCES):
        alone = generate(model, source, max_new_tokens=N_NEW, output_logits=True)
        assert alone.tokens[0] == batched.tokens[row]
        torch.testing.assert_close(alone.logits[0], batched.logits[row], atol=ATOL, rtol=0)


class CallCounter:
    """Forward hooks counting the calls of the encoder and of each decoder layer's projections."""

    def __init__(self, model: Transformer) -> None:
        layers = model.decoder.layers
        self.modules = {"encoder": model.encoder}
        for i, layer in enumerate(layers):
            self.modules |= {f"cross_k{i}": layer.cross_attn.k_proj, f"cross_v{i}": layer.cross_attn.v_proj,
                             f"self_k{i}": layer.attn.k_proj}  # fmt: skip
        self.calls = dict.fromkeys(self.modules, 0)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in self.modules.items()]

    def _hook(self, name: str):
        def count(*_) -> None:
            self.calls[name] += 1

        return count

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@pytest.mark.parametrize("name", ["greedy", "sample", "beam"])
@pytest.mark.parametrize("cache", ["static", "dynamic", "none"])
def test_encoder_runs_once_and_cross_attention_projects_once(model, name, cache):
    ids, mask = sources()
    counter = CallCounter(model)
    try:
        out = generate(model, ids, mask, max_new_tokens=N_NEW, cache=cache, **STRATEGIES[name])
    finally:
        counter.remove()
    steps = max(len(t) for t in out.tokens)  # the decoder runs once per token but the last
    assert counter.calls["encoder"] == 1
    for i in range(len(model.decoder.layers)):
        assert counter.calls[f"self_k{i}"] == steps  # the hooks do count every decoder call
        expected = 1 if cache != "none" else steps  # without a cache every step recomputes them
        assert counter.calls[f"cross_k{i}"] == counter.calls[f"cross_v{i}"] == expected


def test_beam_search_reorders_the_caches_it_uses(model, monkeypatch):
    """The beams swap places during the search (a reorder that is not a plain expansion), and
    cached beam search still gives the uncached tokens and scores (checked above): so the
    self-attention cache, the cross-attention cache and the encoder state all follow the beams."""
    indices: list[torch.Tensor] = []
    original = EncoderDecoderCache.reorder

    def spy(self, index):
        indices.append(index.clone())
        original(self, index)

    monkeypatch.setattr(EncoderDecoderCache, "reorder", spy)
    ids, mask = sources()
    out = generate(model, ids, mask, max_new_tokens=N_NEW, **BEAM)
    expand = torch.arange(len(SOURCES)).repeat_interleave(4)
    assert torch.equal(indices[0], expand)  # step 0: each source's cache is copied to its 4 beams
    assert any(not torch.equal(i, torch.arange(i.numel())) for i in indices[1:])
    monkeypatch.undo()
    uncached = generate(model, ids, mask, max_new_tokens=N_NEW, cache="none", **BEAM)
    assert out.tokens == uncached.tokens
    assert out.tokens != generate(model, ids, mask, max_new_tokens=N_NEW, stop_token_ids=(STOP,)).tokens


def test_reorder_moves_every_row_of_the_caches_and_the_encoder_state():
    g = torch.Generator().manual_seed(0)
    k, v = torch.randn(3, 2, 4, 8, generator=g), torch.randn(3, 2, 4, 8, generator=g)
    cache = EncoderDecoderCache(DynamicCache())
    cache.update(0, k, v)
    cache.cross_attn.store(0, k + 1, v + 1)
    state = EncoderState(torch.randn(3, 5, 16, generator=g), torch.tensor([[1, 1, 1, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]))
    hidden, state_mask = state.hidden.clone(), state.attention_mask.clone()
    index = torch.tensor([2, 0, 0, 1])
    cache.reorder(index)
    state.reorder(index)
    torch.testing.assert_close(cache.self_attn.keys[0], k[index])
    torch.testing.assert_close(cache.cross_attn.get(0), (k[index] + 1, v[index] + 1))
    torch.testing.assert_close(state.hidden, hidden[index])
    assert torch.equal(state.attention_mask, state_mask[index])
    cache.crop(2)  # crop acts on the growing self-attention part only
    assert cache.seq_len() == 2 and cache.cross_attn.get(0)[0].shape[2] == 4


def test_num_beams_one_is_greedy(model):
    ids, mask = sources()
    greedy = generate(model, ids, mask, max_new_tokens=N_NEW, stop_token_ids=(STOP,))
    beam = generate(model, ids, mask, max_new_tokens=N_NEW, strategy="beam", num_beams=1, stop_token_ids=(STOP,))
    assert beam.tokens == greedy.tokens


def test_stop_tokens_end_each_row_separately(model):
    ids, mask = sources()
    free = generate(model, ids, mask, max_new_tokens=N_NEW)
    out = generate(model, ids, mask, max_new_tokens=N_NEW, stop_token_ids=(STOP,))
    for row, tokens in enumerate(free.tokens):
        end = tokens.index(STOP) + 1 if STOP in tokens else N_NEW
        assert out.tokens[row] == tokens[:end]
        assert out.finish_reasons[row] == ("stop_token" if STOP in tokens else "length")
    assert [len(t) for t in out.tokens] == [14, 10, 14]
    assert out.sequences[1, 1 + 10 :].eq(model.config.pad_token_id).all()  # padded after its stop


def test_text_sources_stop_strings_and_streaming(model, tokenizer):
    texts = ["hello world", "abc", "The sea."]
    full = generate(model, texts, tokenizer=tokenizer, max_new_tokens=N_NEW)
    assert full.tokens == generate(model, [tokenizer.encode(t) for t in texts], max_new_tokens=N_NEW).tokens
    assert full.texts == [tokenizer.decode(t) for t in full.tokens]
    pieces = list(stream(model, texts, tokenizer=tokenizer, max_new_tokens=N_NEW))
    for row in range(len(texts)):
        assert [p.token for p in pieces if p.row == row and p.token is not None] == full.tokens[row]
        assert "".join(p.text for p in pieces if p.row == row) == full.texts[row]
    stop = full.texts[0][4:6]
    cut = full.texts[0][: full.texts[0].index(stop)]
    out = generate(model, texts, tokenizer=tokenizer, max_new_tokens=N_NEW, stop_strings=(stop,))
    assert out.texts[0] == cut and out.finish_reasons[0] == "stop_string"
    streamed = "".join(p.text for p in stream(model, texts[0], tokenizer=tokenizer, max_new_tokens=N_NEW,
                                              stop_strings=(stop,)))  # fmt: skip
    assert streamed == cut


def test_prompt_lookup_gives_the_greedy_output(model):
    greedy = generate(model, SOURCES[1], max_new_tokens=N_NEW)
    assert generate(model, SOURCES[1], max_new_tokens=N_NEW, prompt_lookup=3).tokens == greedy.tokens


def test_greedy_translate_is_generate_stopping_at_eos(model):
    ids, mask = sources()
    eos = model.config.eos_token_id
    out = generate(model, ids, mask, max_new_tokens=N_NEW, stop_token_ids=(eos,), pad_token_id=model.config.pad_token_id)
    assert torch.equal(model.greedy_translate(ids, mask, max_new_tokens=N_NEW), out.sequences[:, 1:])


def test_bad_sources_and_settings_name_the_problem(model):
    ids, mask = sources()
    with pytest.raises(ValueError, match="pad sources on the right"):
        generate(model, ids.flip(1), mask.flip(1), max_new_tokens=3)
    with pytest.raises(ValueError, match="slide_window=True changes a decoder's prompt"):
        generate(model, ids, mask, max_new_tokens=3, slide_window=True)
    context = model.max_seq_len
    with pytest.raises(ValueError, match=rf"the source \({context + 1} tokens\) is longer than the model's max_seq_len"):
        generate(model, [5] * (context + 1), max_new_tokens=3)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        generate(model, SOURCES[0], max_new_tokens=context + 1)
    with pytest.raises(ValueError, match="outside the model's vocabulary of 64 tokens"):
        generate(model, [5, 64], max_new_tokens=3)


def test_the_model_comes_back_in_training_mode(model):
    model.train()
    try:
        assert generate(model, SOURCES, max_new_tokens=5).tokens == generate(model.eval(), SOURCES, max_new_tokens=5).tokens
        model.train()
        list(stream(model, SOURCES, max_new_tokens=5))
        assert model.training
    finally:
        model.eval()


def test_generate_verb_prints_an_encoder_decoder_answer_without_the_source(tmp_path, capsys) -> None:
    from glassformer.cli import main
    from glassformer.registry import build
    from glassformer.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz ")
    n = tokenizer.vocab_size
    model = build("transformer-base-tiny", vocab_size=n, tgt_vocab_size=n)
    model.save(tmp_path / "mt")
    tokenizer.save(tmp_path / "mt")
    assert main(["generate", str(tmp_path / "mt"), "--prompt", "hello", "--max-new-tokens", "5"]) == 0
    printed = capsys.readouterr().out
    assert not printed.startswith("hello") and 0 < len(printed.strip("\n")) <= 5 * 8
