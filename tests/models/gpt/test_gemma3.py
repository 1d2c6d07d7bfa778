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
