"""The fused decoding step (``quant/decode.py``, ``kernels/decode.c``): the same tokens and logits as
the blocks' own forward, taken only where it computes the same thing, rebuilt when a layer changes."""

from __future__ import annotations

import copy

import pytest
import torch

import glassformer.quant.decode as qdecode
from glassformer.generate import GenerationConfig, generate
from glassformer.kernels import available, build, unavailable_reason
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import gemma3_270m, gpt2, smollm2_135m, tiny
from glassformer.nn.ffn import QuickGELU
from glassformer.peft import LoraConfig, inject_lora
from glassformer.quant import NF4Linear, fused_decode_status, quantize_model
from tests.kernels.conftest import runnable

needs_kernels = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")
# Llama-style, GQA 4 query / 2 key-value heads; widths that are multiples of 64 so 4-bit layers use the kernels
CONFIG = tiny(smollm2_135m()).replace(dim=128, n_heads=4, n_kv_heads=2, ffn_dim=192, max_seq_len=64, n_layers=3)
# GPT-2: LayerNorm with biases, GELU (tanh) without a gate, learned positions, biases everywhere
GPT2 = tiny(gpt2()).replace(dim=128, n_heads=4, max_seq_len=64, n_layers=3)
# heads of 24: attention's dot products (16 lanes) end on a partial step
NARROW = CONFIG.replace(dim=192, n_heads=8, n_kv_heads=2)


def _model(to: str, config=CONFIG) -> GPT:
    torch.manual_seed(0)
    return quantize_model(GPT(config).eval(), to=to)


def _run(model: GPT, ids: torch.Tensor, n: int = 12, cache: str = "static"):
    return generate(model, ids, config=GenerationConfig(max_new_tokens=n, output_logits=True, cache=cache,
                                                        cpu_kernels=False))  # fmt: skip


def _count_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = qdecode.decode_step
    monkeypatch.setattr(qdecode, "decode_step", lambda *a: calls.append(a[-1]) or real(*a))
    return calls


def _unfused(model: GPT) -> GPT:
    plain = copy.deepcopy(model)
    plain.stack.decode_hook = None
    return plain


@needs_kernels
@pytest.mark.parametrize("to", ["int8", "nf4", "fp4"])
@pytest.mark.parametrize("config", [CONFIG, GPT2, NARROW], ids=["llama", "gpt2", "narrow-heads"])
def test_fused_steps_equal_the_blocks(monkeypatch, to, config):
    """Every decoding step after the prompt runs as one C call, with the blocks' logits."""
    model = _model(to, config)
    assert fused_decode_status(model) is None
    ids = torch.randint(0, config.vocab_size, (1, 5))
    want = _run(_unfused(model), ids)
    calls = _count_calls(monkeypatch)
    got = _run(model, ids)
    assert calls == list(range(5, 5 + 11))  # cache rows 5.. for the 11 steps after the prompt pass
    assert got.tokens == want.tokens
    # Only the order of a few sums differs (norms, attention): ~1e-7. The int8 kernel then rounds
    # each layer's input to 16 bits, so a last-bit change can move an input by one step (~1e-5).
    tol = 5e-5 if to == "int8" else 1e-6
    assert (got.logits - want.logits).abs().max() <= tol * want.logits.abs().max()


@needs_kernels
def test_other_calls_take_the_blocks(monkeypatch):
    """A batch of two, a dynamic cache, no cache, training mode: the hook declines, results agree."""
    model = _model("int8")
    calls = _count_calls(monkeypatch)
    ids = torch.randint(0, CONFIG.vocab_size, (2, 4))
    for cache in ("dynamic", "none"):
        assert _run(model, ids[:1], 4, cache).tokens == _run(_unfused(model), ids[:1], 4, cache).tokens
    assert _run(model, ids, 4).tokens == _run(_unfused(model), ids, 4).tokens
    assert calls == []
    model.train()
    assert "training mode" in fused_decode_status(model)


@needs_kernels
def test_a_cache_overflow_still_gets_the_caches_error():
    model = _model("int8")
    cache = model.new_cache(1, max_len=3, kind="static")
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), cache=cache)
        with pytest.raises(ValueError, match="static cache holds max_len=3"):
            model(torch.tensor([[4]]), cache=cache)


@needs_kernels
def test_a_changed_layer_rebuilds_or_declines():
    """Weights loaded in place are read anew; a LoRA adapter on top turns the fused step off."""
    model = _model("nf4")
    ids = torch.randint(0, CONFIG.vocab_size, (1, 4))
    before = _run(model, ids, 6).logits
    other = quantize_model(GPT(CONFIG).eval(), to="nf4")  # other random weights
    model.load_state_dict(other.state_dict())
    after = _run(model, ids, 6).logits
    assert not after.equal(before)
    assert after.equal(_run(other, ids, 6).logits)
    inject_lora(model, LoraConfig(r=2, target=("q_proj",)))
    assert "attn.q_proj is LoraLinear, not a quantized layer" in fused_decode_status(model)


@needs_kernels
def test_copies_decode_with_their_own_weights(monkeypatch):
    """deepcopy gives the copy a hook on its own stack, whose structures are rebuilt."""
    model = _model("int8")
    twin = copy.deepcopy(model)
    twin.load_state_dict(quantize_model(GPT(CONFIG).eval(), to="int8").state_dict())
    ids = torch.randint(0, CONFIG.vocab_size, (1, 4))
    calls = _count_calls(monkeypatch)
    mine = _run(model, ids).logits
    assert twin.stack.decode_hook.stack is twin.stack
    got, want = _run(twin, ids).logits, _run(_unfused(twin), ids).logits
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert len(calls) == 2 * 11  # every step of the two fused runs
    assert not _run(twin, ids).logits.equal(mine)


def test_models_it_does_not_fit_say_why():
    quick = quantize_model(GPT(tiny(gpt2())).eval(), to="int8")
    for block in quick.stack.layers:  # CLIP's activation, which no GPT preset has
        block.ffn.act = QuickGELU()
    assert "the activation QuickGELU is not one the fused step has" in fused_decode_status(quick)
    outliers = quantize_model(GPT(CONFIG).eval(), to="int8", threshold=6.0)
    assert "LLM.int8() outliers" in fused_decode_status(outliers)
    narrow = quantize_model(GPT(tiny(smollm2_135m())).eval(), to="nf4")  # width 32: 4-bit blocks cross rows
    assert "decodes with PyTorch" in fused_decode_status(narrow)
    assert isinstance(narrow.stack.layers[0].attn.q_proj, NF4Linear)


@needs_kernels
@pytest.mark.parametrize("to", ["int8", "nf4"])
def test_every_instruction_set_path_gives_the_plain_c_bits(kernel_isa, monkeypatch, to):
    """decode.c calls the layers' kernels, which give the same bits on every path, and keeps its
    own sums in source order (no fast-math, no contraction): the whole step does too."""
    runnable("generic")
    model = _model(to)
    ids = torch.randint(0, CONFIG.vocab_size, (1, 5))
    calls = _count_calls(monkeypatch)
    got = _run(model, ids).logits
    with monkeypatch.context() as patch:
        patch.setitem(build._state, "lib", build.load("generic"))
        want = _run(model, ids).logits
    assert len(calls) == 2 * 11
    assert torch.equal(got, want), f"the {kernel_isa} fused step rounds differently from the generic build"


def test_gemma_stacks_are_left_alone():
    gemma = quantize_model(GPT(tiny(gemma3_270m())).eval(), to="int8")
    assert "has no TransformerStack" in fused_decode_status(gemma)
