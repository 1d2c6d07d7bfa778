"""Gemma 3 as GPT config fields: k-quant dequantization, Hugging Face import, GGUF parity, sliding windows.

The fast tests build a tiny random ``Gemma3ForCausalLM`` (two local layers with a 4-token window
and one global layer, soft-capped logits) and compare our import of it with transformers. The
GGUF tests read the real Gemma 3 270M file (``make gemma3-weights``) and skip without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.generate import generate
from glassformer.models.gpt import GPT
from glassformer.models.gpt import config as cfg
from glassformer.models.gpt.hf import from_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")
ATOL = 1e-5
SKIP_WEIGHTS = "Gemma 3 270M GGUF not installed: run `make gemma3-weights`"


def _tiny_hf(tmp_path, **overrides):
    """A random Gemma3ForCausalLM with noise on every weight (norms too), saved to ``tmp_path``."""
    config = transformers.Gemma3TextConfig(
        vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"], query_pre_attn_scalar=12,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        final_logit_softcapping=30.0, attn_implementation="eager", pad_token_id=0, bos_token_id=2, eos_token_id=1,
        **overrides,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    return model


def test_hf_import_matches_transformers_on_a_left_padded_batch(tmp_path):
    hf = _tiny_hf(tmp_path)
    ours = from_pretrained(tmp_path)
    c = ours.config
    assert (c.sliding_window, c.global_every, c.rope_local_theta, c.logit_softcap) == (4, 3, 10_000.0, 30.0)
    ids = torch.randint(3, 101, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=ATOL, rtol=0)


def test_greedy_past_the_window_matches_transformers_with_every_cache(tmp_path):
    """12 new tokens after a 6-token prompt run 14 columns past a 4-token window."""
    hf = _tiny_hf(tmp_path)
    ours = from_pretrained(tmp_path)
    prompt = torch.tensor([[2, 17, 33, 48, 5, 90]])
    with torch.no_grad():
        ref = hf.generate(prompt, max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, 6:].tolist()
    for cache in ("static", "dynamic", "none"):
        out = generate(ours, prompt, max_new_tokens=12, strategy="greedy", cache=cache, cpu_kernels=False)
        assert out.tokens[0] == ref, cache


def test_export_round_trip_opens_in_transformers(tmp_path):
    torch.manual_seed(1)
    ours = GPT(cfg.tiny(cfg.gemma3_270m())).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_pretrained(ours, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(0, 96, (1, 20))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_gemma_options_without_their_companions_are_refused():
    with pytest.raises(ValueError, match="set sliding_window"):
        cfg.GPTConfig(global_every=6)
    with pytest.raises(ValueError, match="norm='rmsnorm'"):
        cfg.GPTConfig(qk_norm=True)
    with pytest.raises(ValueError, match="Gemma3ForCausalLM"):
        from glassformer.models.gpt.hf import model_type

        model_type(cfg.gemma3_270m().replace(post_norms=False))


# ---------------------------------------------------------------------------------------------
# the real file (make gemma3-weights)

CHAT = "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n"


@pytest.fixture(scope="module")
def gemma_file():
    from glassformer.models.gpt.gguf import find_gemma3_gguf

    try:
        return find_gemma3_gguf()
    except FileNotFoundError:
        pytest.skip(SKIP_WEIGHTS)


def test_q4_k_and_q6_k_dequantize_bit_exact_to_gguf(gemma_file):
    gguf = pytest.importorskip("gguf")
    from glassformer.models.gpt.quants import DEQUANTIZERS

    seen = set()
    for tensor in gguf.GGUFReader(gemma_file).tensors:
        kind = tensor.tensor_type.name
        if kind in DEQUANTIZERS and kind not in seen:  # one of each per kind keeps it fast
            ref = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            ours = DEQUANTIZERS[kind](tensor.data, ref.shape)
            assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), tensor.name
            seen.add(kind)
    assert seen == {"Q4_K", "Q6_K"}


@pytest.fixture(scope="module")
def both(gemma_file):
    """Ours and transformers' loads of the same GGUF (transformers dequantizes it itself)."""
    from glassformer.models.gpt.gguf import load_gguf

    ours, tokenizer, template = load_gguf(gemma_file)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        gemma_file.parent, gguf_file=gemma_file.name, dtype=torch.float32
    ).eval()
    return ours, tokenizer, template, hf


@pytest.mark.heavy  # transformers dequantizes the GGUF and converts its tokenizer: minutes on 2 cores
def test_gguf_logits_and_32_greedy_tokens_equal_transformers(both):
    ours, tokenizer, template, hf = both
    from glassformer.models.gpt.gguf import apply_chat_template

    assert apply_chat_template([{"role": "user", "content": "What is the capital of France?"}], template=template) == CHAT
    ids = torch.tensor([tokenizer.encode(CHAT)])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)
        ref = hf.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1] :].tolist()
    assert generate(ours, ids, max_new_tokens=32, strategy="greedy").tokens[0] == ref


@pytest.mark.heavy
def test_sentencepiece_tokenizer_matches_transformers(gemma_file, both):
    tokenizer = both[1]
    hf_tok = transformers.AutoTokenizer.from_pretrained(gemma_file.parent, gguf_file=gemma_file.name)
    for text in (CHAT, "  two  spaces, naïve café 🤖 ½\n\n\nthree newlines", "def f(x):\n    return x**2"):
        assert tokenizer.encode(text) == hf_tok(text).input_ids, text
        assert tokenizer.decode(tokenizer.encode(text, add_bos=False)) == text
