"""The decoding loop: caches agree with recomputation, batches with single prompts, stops and streams."""

import pytest
import torch

from glassformer.generate import GenerationConfig, generate, prepare_prompts, stream
from tests.generate.conftest import padded_batch, tiny_gpt


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_cached_logits_equal_uncached_at_every_step(model, strategy):
    """Static and dynamic caches give the logits a full recomputation gives, on a left-padded batch."""
    ids, mask = padded_batch()
    extra = dict(num_beams=3) if strategy == "beam" else {}
    runs = {
        cache: generate(model, ids, mask, strategy=strategy, max_new_tokens=12, cache=cache, output_logits=True, **extra)
        for cache in ("none", "dynamic", "static")
    }
    reference = runs["none"]
    assert reference.logits.shape[:2] == ((9 if strategy == "beam" else 3), 12)
    for cache in ("dynamic", "static"):
        torch.testing.assert_close(runs[cache].logits, reference.logits, rtol=1e-5, atol=1e-5)
        assert runs[cache].tokens == reference.tokens


def test_padded_batch_equals_each_prompt_alone(model):
    ids, mask = padded_batch()
    batched = generate(model, ids, mask, max_new_tokens=10, output_logits=True)
    for row in range(ids.shape[0]):
        alone = generate(model, ids[row][mask[row].bool()], max_new_tokens=10, output_logits=True)
        assert alone.tokens[0] == batched.tokens[row]
        torch.testing.assert_close(alone.logits[0], batched.logits[row], rtol=1e-5, atol=1e-5)
    # ragged lists are left-padded the same way
    rows = [ids[r][mask[r].bool()].tolist() for r in range(ids.shape[0])]
    assert generate(model, rows, max_new_tokens=10).tokens == batched.tokens


def test_prepare_prompts_left_pads_lists():
    batch = prepare_prompts([[4, 5, 6], [7]], pad_token_id=9)
    assert batch.input_ids.tolist() == [[4, 5, 6], [9, 9, 7]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prepare_prompts([[1, 2], [3, 4]]).attention_mask is None  # nothing padded: no mask at all


def test_greedy_is_deterministic_and_sampling_reproducible_with_a_seed(gpt2_model):
    prompt = [3, 1, 4, 1, 5]
    first = generate(gpt2_model, prompt, max_new_tokens=15)
    assert generate(gpt2_model, prompt, max_new_tokens=15).tokens == first.tokens
    config = GenerationConfig(strategy="sample", max_new_tokens=15, seed=123, top_k=20, top_p=0.95)
    a = generate(gpt2_model, prompt, config=config)
    b = generate(gpt2_model, prompt, config=config)
    c = generate(gpt2_model, prompt, config=config.replace(seed=7))
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    assert a.tokens != first.tokens  # sampling at T=1 does not happen to be greedy
    # the private generator leaves torch's global random state alone
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    generate(gpt2_model, prompt, config=config)
    assert torch.equal(torch.rand(3), expected)


def test_temperature_towards_zero_approaches_greedy(gpt2_model):
    ids, mask = padded_batch()
    greedy = generate(gpt2_model, ids, mask, max_new_tokens=20)
    cold = generate(gpt2_model, ids, mask, strategy="sample", temperature=1e-6, seed=0, max_new_tokens=20)
    warm = generate(gpt2_model, ids, mask, strategy="sample", temperature=1.0, seed=0, max_new_tokens=20)
    assert cold.tokens == greedy.tokens
    assert warm.tokens != greedy.tokens
    zero = generate(gpt2_model, ids, mask, strategy="sample", temperature=0.0, max_new_tokens=20)
    assert zero.tokens == greedy.tokens  # temperature 0 means greedy


def test_repetition_penalty_discourages_repeats(gpt2_model):
    prompt = [3, 1, 4, 1, 5]
    plain = generate(gpt2_model, prompt, max_new_tokens=30).tokens[0]
    penalised = generate(gpt2_model, prompt, max_new_tokens=30, repetition_penalty=3.0).tokens[0]
    repeats = lambda toks: len(toks) - len(set(toks))
    assert repeats(penalised) < repeats(plain)


def test_stop_tokens_end_each_row_separately(gpt2_model):
    ids, mask = padded_batch()
    free = generate(gpt2_model, ids, mask, max_new_tokens=12)
    stop = free.tokens[1][3]  # a token row 1 produces at step 3
    out = generate(gpt2_model, ids, mask, max_new_tokens=12, stop_token_ids=(stop,), pad_token_id=63)
    for row, tokens in enumerate(free.tokens):
        end = tokens.index(stop) + 1 if stop in tokens else len(tokens)
        assert out.tokens[row] == tokens[:end]
        assert out.finish_reasons[row] == ("stop_token" if stop in tokens else "length")
        # after a row stops, the sequence holds padding
        assert out.sequences[row, ids.shape[1] + end :].eq(63).all()
    assert out.finish_reasons[1] == "stop_token"


def test_the_stop_token_is_kept_in_tokens_but_not_in_the_text(gpt2_model, tokenizer):
    free = generate(gpt2_model, "hello", tokenizer=tokenizer, max_new_tokens=12)
    stop = free.tokens[0][4]
    for strategy, extra in (("greedy", {}), ("beam", {"num_beams": 1})):
        out = generate(gpt2_model, "hello", tokenizer=tokenizer, max_new_tokens=12, stop_token_ids=(stop,),
                       strategy=strategy, **extra)  # fmt: skip
        end = free.tokens[0].index(stop)
        assert out.tokens[0] == free.tokens[0][: end + 1]
        assert out.texts[0] == tokenizer.decode(free.tokens[0][:end])


def test_stop_strings_cut_the_text(gpt2_model, tokenizer):
    prompt = "hello there"
    free = generate(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=20)
    text = free.texts[0]
    stop = text[5:7]
    out = generate(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=20, stop_strings=(stop, "never seen"))
    assert out.finish_reasons == ["stop_string"]
    assert out.texts[0] == text[: text.index(stop)]
    assert len(out.tokens[0]) < 20
    with pytest.raises(ValueError, match="need a tokenizer"):
        generate(gpt2_model, [1, 2], max_new_tokens=3, stop_strings=("x",))


def test_stream_yields_tokens_as_they_come_and_the_same_result(gpt2_model, tokenizer):
    prompt = "to be or"
    full = generate(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=16)
    pieces = list(stream(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=16))
    assert [p.token for p in pieces if p.token is not None] == full.tokens[0]
    assert "".join(p.text for p in pieces) == full.texts[0]
    # a stop string is never shown, not even its first characters
    stop = full.texts[0][6:9]
    streamed = "".join(p.text for p in stream(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=16,
                                              stop_strings=(stop,)))  # fmt: skip
    assert streamed == full.texts[0][: full.texts[0].index(stop)]
    # the generator is lazy: the caller's grad mode is untouched between pieces
    it = stream(gpt2_model, prompt, tokenizer=tokenizer, max_new_tokens=3)
    next(it)
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    with pytest.raises(ValueError, match="cannot stream"):
        stream(gpt2_model, prompt, tokenizer=tokenizer, strategy="beam", num_beams=2)


def test_stream_holds_back_half_characters():
    from glassformer.generate.stopping import _settled_end

    assert _settled_end("abc\ufffd", ()) == 3
    assert _settled_end("say STO", ("STOP",)) == 4
    assert _settled_end("say ST", ("STOP", "Tx")) == 4
    assert _settled_end("say x", ("STOP",)) == 5


def test_model_mode_is_restored(gpt2_model):
    gpt2_model.train()
    generate(gpt2_model, [1, 2, 3], max_new_tokens=2)
    assert gpt2_model.training
    gpt2_model.eval()


# ---- bad input -------------------------------------------------------------------------------


def test_empty_prompts_are_refused(gpt2_model):
    with pytest.raises(ValueError, match="the prompt is empty"):
        generate(gpt2_model, [], max_new_tokens=2)
    with pytest.raises(ValueError, match="the prompt is empty"):
        generate(gpt2_model, torch.zeros((1, 0), dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(gpt2_model, torch.tensor([[1, 2], [0, 0]]), torch.tensor([[1, 1], [0, 0]]), max_new_tokens=2)


def test_prompt_longer_than_the_context(gpt2_model):
    long_prompt = list(range(1, 45))  # 44 tokens; the context is 48
    with pytest.raises(ValueError, match=r"the prompt \(44 tokens\) plus max_new_tokens \(10\) exceed the model's context of 48"):
        generate(gpt2_model, long_prompt, max_new_tokens=10)
    out = generate(gpt2_model, long_prompt, max_new_tokens=10, truncate_prompt=True)
    assert out.prompt_length == 38  # the last 48 - 10 tokens are kept
    assert out.sequences[0, :38].tolist() == long_prompt[-38:]
    assert out.tokens == generate(gpt2_model, long_prompt[-38:], max_new_tokens=10).tokens
    with pytest.raises(ValueError, match="leaves no room"):
        generate(gpt2_model, long_prompt, max_new_tokens=48, truncate_prompt=True)


def test_other_bad_inputs_get_clear_messages(gpt2_model):
    with pytest.raises(ValueError, match="unknown decoding strategy"):
        generate(gpt2_model, [1, 2], strategy="topk")
    with pytest.raises(ValueError, match=r"top_p=1.2: must be in \(0, 1\]"):
        generate(gpt2_model, [1, 2], strategy="sample", top_p=1.2)
    with pytest.raises(ValueError, match="pad prompts on the left"):
        generate(gpt2_model, torch.tensor([[1, 2, 0]]), torch.tensor([[1, 1, 0]]))
    with pytest.raises(ValueError, match="outside the model's vocabulary of 64"):
        generate(gpt2_model, [1, 200])
    with pytest.raises(TypeError, match="integer token ids"):
        generate(gpt2_model, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        generate(gpt2_model, "some text")
    with pytest.raises(ValueError, match="attention_mask has shape"):
        generate(gpt2_model, torch.tensor([[1, 2]]), torch.tensor([[1, 1, 1]]))


def test_llama_variant_is_batched_correctly_too():
    llama = tiny_gpt("llama", seed=1)
    ids, mask = padded_batch()
    batched = generate(llama, ids, mask, max_new_tokens=8, strategy="beam", num_beams=2)
    for row in range(ids.shape[0]):
        alone = generate(llama, ids[row][mask[row].bool()], max_new_tokens=8, strategy="beam", num_beams=2)
        assert alone.tokens[0] == batched.tokens[row]


def test_decode_layout_changes_strides_not_values(tmp_path):
    from glassformer.generate.layout import decode_layout
    from glassformer.models.gpt import GPT

    model = tiny_gpt("gpt2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert decode_layout(model) > 0
    assert decode_layout(model) == 0  # idempotent
    assert not model.lm_head.weight.is_contiguous() and model.lm_head.weight is model.wte.weight
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    torch.testing.assert_close(model(torch.tensor([[1, 2, 3]])).logits, logits)
    # saving, loading and training still work on the moved weights
    model.save(tmp_path)
    assert torch.equal(GPT.load(tmp_path).lm_head.weight, model.lm_head.weight)
    loss = model(torch.tensor([[1, 2, 3]]), targets=torch.tensor([[2, 3, 4]])).loss
    loss.backward()
    assert model.lm_head.weight.grad.shape == model.lm_head.weight.shape
    torch.optim.AdamW(model.parameters()).step()


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_prompt_lookup_gives_the_greedy_output(model, cache, tokenizer):
    from glassformer.generate.decode import lookup_continuation

    assert lookup_continuation([1, 2, 3, 9, 1, 2, 3], 2) == [9, 1]
    assert lookup_continuation([5, 1, 7, 1], 3) == [7, 1]
    assert lookup_continuation([1, 2, 3], 4) == []
    prompt = [3, 14, 15, 9, 26, 3, 14, 15]  # repeats itself: guesses start right away
    for n_new in (1, 2, 30):
        plain = generate(model, prompt, max_new_tokens=n_new, cache=cache)
        fast = generate(model, prompt, max_new_tokens=n_new, cache=cache, prompt_lookup=4)
        assert fast.tokens == plain.tokens
        assert torch.equal(fast.sequences, plain.sequences)
    # stop tokens, also when one is among the accepted guesses
    plain = generate(model, prompt, max_new_tokens=30)
    for stop in set(plain.tokens[0][2:]):
        fast = generate(model, prompt, max_new_tokens=30, prompt_lookup=4, stop_token_ids=(stop,))
        end = plain.tokens[0].index(stop) + 1
        assert fast.tokens[0] == plain.tokens[0][:end]
        assert torch.equal(fast.sequences[0], plain.sequences[0, : len(prompt) + end])
    streamed = [p.token for p in stream(model, prompt, max_new_tokens=30, prompt_lookup=4)]
    assert streamed == plain.tokens[0]
    with pytest.raises(ValueError, match="greedy decoding only"):
        generate(model, prompt, strategy="sample", prompt_lookup=3)
    with pytest.raises(ValueError, match="one prompt at a time"):
        generate(model, [prompt, prompt], max_new_tokens=4, prompt_lookup=3)


@pytest.mark.parametrize("strategy", ["greedy", "sample", "beam"])
def test_slide_window_decodes_past_the_context(model, strategy):
    """Past the 48-position context: cached decoding re-encodes the window exactly as the uncached
    reference computes it, on a left-padded batch, and every logit comes from at most 48 tokens."""
    ids, mask = padded_batch()
    extra = dict(num_beams=2) if strategy == "beam" else dict(seed=3) if strategy == "sample" else {}
    runs = {
        cache: generate(model, ids, mask, strategy=strategy, max_new_tokens=100, cache=cache, slide_window=True,
                        output_logits=True, **extra)  # fmt: skip
        for cache in ("none", "static", "dynamic")
    }
    for cache in ("static", "dynamic"):
        assert runs[cache].tokens == runs["none"].tokens
        torch.testing.assert_close(runs[cache].logits, runs["none"].logits, rtol=1e-4, atol=1e-4)
    assert all(len(t) == 100 for t in runs["static"].tokens)
    with pytest.raises(ValueError, match="slide_window=True"):
        generate(model, ids, mask, max_new_tokens=100)


def test_slide_window_sees_only_the_window(gpt2_model):
    """After a slide, the next logits equal a fresh run on the kept window: older tokens are gone."""
    ids = torch.tensor([[3, 14, 15, 9, 26, 5]])
    out = generate(gpt2_model, ids, max_new_tokens=50, slide_window=True, output_logits=True)
    seq = out.sequences[0]
    context = gpt2_model.max_seq_len  # 48
    # the step producing new token 43 (sequence length 6 + 43 = 49 > 48) re-encoded the last 36
    length = ids.shape[1] + 43
    window = seq[length - (context - context // 4) : length]
    with torch.no_grad():
        fresh = gpt2_model(window[None].clone()).logits[0, -1]
    torch.testing.assert_close(out.logits[0, 43], fresh, rtol=1e-5, atol=1e-5)


def test_slide_window_keeps_the_end_of_a_long_prompt(gpt2_model):
    long_prompt = torch.arange(60)[None] % 60
    out = generate(gpt2_model, long_prompt, max_new_tokens=5, slide_window=True)
    assert out.sequences.shape[1] == 48 + 5  # the prompt kept its last 48 tokens
    assert out.sequences[0, :48].tolist() == long_prompt[0, -48:].tolist()
