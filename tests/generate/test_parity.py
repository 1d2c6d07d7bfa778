"""Greedy and beam search against transformers' generate, on the same random GPT-2 weights."""

from collections import Counter

import pytest
import torch

from glassformer.generate import generate
from tests.generate.conftest import padded_batch
from tests.models._hf import strip_tails

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A random-init GPT2LMHeadModel and the same weights loaded into ours through the HF layout."""
    from glassformer.models.gpt.hf import from_pretrained

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=48, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    hf = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)
    return hf, from_pretrained(folder)


def test_greedy_matches_transformers_on_a_left_padded_batch(pair):
    hf, ours = pair
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0)
    out = generate(ours, ids, mask, max_new_tokens=20)
    assert out.sequences[:, ids.shape[1] :].tolist() == ref[:, ids.shape[1] :].tolist()
    # with a repetition penalty too (one unpadded prompt: transformers would also penalise padding)
    with torch.no_grad():
        ref = hf.generate(ids[:1], max_new_tokens=20, do_sample=False, repetition_penalty=1.5, pad_token_id=0)
    out = generate(ours, ids[:1], max_new_tokens=20, repetition_penalty=1.5)
    assert out.tokens[0] == ref[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize(
    "num_beams, length_penalty, early_stopping",
    [(3, 1.0, False), (4, 2.0, False), (3, -1.0, True)],
)
def test_beam_search_matches_transformers(pair, num_beams, length_penalty, early_stopping):
    hf, ours = pair
    ids, mask = padded_batch()
    # the model's favourite token as the stop token, so that beams finish early
    greedy = generate(ours, ids, mask, max_new_tokens=14).tokens
    stop = Counter(t for row in greedy for t in row).most_common(1)[0][0]
    kwargs = dict(num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping)
    with torch.no_grad():
        ref = hf.generate(
            ids, attention_mask=mask, max_new_tokens=14, do_sample=False, eos_token_id=stop, pad_token_id=0,
            return_dict_in_generate=True, output_scores=True, **kwargs,
        )  # fmt: skip
    out = generate(ours, ids, mask, strategy="beam", max_new_tokens=14, stop_token_ids=(stop,), **kwargs)
    fill = {0, stop}
    assert strip_tails(out.tokens, fill) == strip_tails(ref.sequences[:, ids.shape[1] :].tolist(), fill)
    if length_penalty <= 1.0:  # (a penalty of 2 favours long beams: none ends at the stop token)
        assert "stop_token" in out.finish_reasons  # the comparison covered finished hypotheses
    torch.testing.assert_close(torch.tensor(out.scores), ref.sequences_scores, rtol=1e-5, atol=1e-5)


def test_beam_search_with_one_beam_is_greedy(pair):
    _, ours = pair
    ids, mask = padded_batch()
    greedy = generate(ours, ids, mask, max_new_tokens=15)
    beam = generate(ours, ids, mask, strategy="beam", num_beams=1, max_new_tokens=15)
    assert beam.tokens == greedy.tokens
    assert torch.equal(beam.sequences, greedy.sequences)
