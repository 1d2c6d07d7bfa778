"""Parity with Hugging Face transformers: GPT-2 and Llama checkpoints in both directions.

Random-init ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` (small, GQA included) are saved to a temp
folder, loaded by ``glassformer.models.gpt.hf.from_pretrained`` and compared on logits (fp32,
atol 1e-5) and on greedy continuations; then ours is exported with ``save_pretrained`` and loaded
back by transformers.
"""

from __future__ import annotations

import json

import pytest
import torch

from glassformer.models.gpt import GPT, GPTConfig
from glassformer.models.gpt.hf import from_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


def _hf_gpt2(tie: bool = True):
    cfg = transformers.GPT2Config(
        vocab_size=97, n_positions=48, n_embd=48, n_layer=2, n_head=4, tie_word_embeddings=tie,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


def _hf_llama(n_kv: int = 2, tie: bool = False):
    cfg = transformers.LlamaConfig(
        vocab_size=101, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv, max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


HF_MODELS = {
    "gpt2": lambda: _hf_gpt2(),
    "gpt2-untied": lambda: _hf_gpt2(tie=False),
    "llama-gqa": lambda: _hf_llama(n_kv=2),
    "llama-mha-tied": lambda: _hf_llama(n_kv=4, tie=True),
    "llama-mqa": lambda: _hf_llama(n_kv=1),
}


def _randomize(model: torch.nn.Module) -> None:
    """Random norms and biases too, so a misplaced one cannot hide behind its 1/0 initial value."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.1)


def _greedy(step, ids: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        nxt = step(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_hf_checkpoint_loads_with_equal_logits(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    hf = HF_MODELS[name]().eval()
    _randomize(hf)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    ids = torch.randint(0, hf.config.vocab_size, (2, 20))
    with torch.no_grad():
        ref = hf(ids).logits
        got = ours(ids).logits
        torch.testing.assert_close(got, ref, atol=ATOL, rtol=0)
        a = _greedy(lambda x: hf(x).logits, ids[:, :5], 12)
        b = _greedy(lambda x: ours(x).logits, ids[:, :5], 12)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(HF_MODELS))
def test_save_pretrained_loads_into_transformers(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    hf = HF_MODELS[name]()
    config = from_pretrained_config(hf)
    ours = GPT(config).eval()
    _randomize(ours)
    save_pretrained(ours, tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(back).__name__ == type(hf).__name__
    ids = torch.randint(0, config.vocab_size, (2, 17))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, atol=ATOL, rtol=0)
    # and the round trip through our own loader is exact
    again = from_pretrained(tmp_path)
    for k, v in ours.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def from_pretrained_config(hf) -> GPTConfig:
    from glassformer.models.gpt.hf import config_from_hf

    return config_from_hf(hf.config.to_dict())


def test_left_padded_batch_matches_transformers(tmp_path) -> None:
    """Positions derived from the attention mask agree with transformers' for left padding."""
    torch.manual_seed(0)
    hf = _hf_llama().eval()
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path)
    ids = torch.randint(0, 101, (2, 10))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=pos).logits
        got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[0, 4:], ref[0, 4:], atol=ATOL, rtol=0)
    torch.testing.assert_close(got[1], ref[1], atol=ATOL, rtol=0)


def test_gpt2_file_without_transformer_prefix_loads(tmp_path) -> None:
    """The original GPT-2 upload was saved from GPT2Model: keys lack "transformer." and carry attn.bias."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    hf = _hf_gpt2().eval()
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
    state["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 48, 48))
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    ours = from_pretrained(tmp_path)
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=ATOL, rtol=0)


def test_tokenizer_travels_with_the_checkpoint(tmp_path) -> None:
    from glassformer.models.gpt.hf import tokenizer_from_pretrained
    from glassformer.tokenizers import train_bpe

    text = "the quick brown fox jumps over the lazy dog. " * 30
    tok = train_bpe([text], 280, show_progress=False)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=16, n_layers=1, n_heads=2, dim=16))
    save_pretrained(model, tmp_path, tokenizer=tok)
    again = tokenizer_from_pretrained(tmp_path)
    assert again.encode(text[:60]) == tok.encode(text[:60])
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok(text[:60])["input_ids"] == tok.encode(text[:60])
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.json").unlink()
    assert tokenizer_from_pretrained(tmp_path) is None


def test_bad_checkpoints_have_clear_errors(tmp_path) -> None:
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'"):
        from_pretrained(tmp_path / "bert")
    GPT(GPTConfig(vocab_size=50, max_seq_len=8, n_layers=1, n_heads=2, dim=16)).save(tmp_path / "ours")
    with pytest.raises(ValueError, match="glassformer gpt folder"):
        from_pretrained(tmp_path / "ours")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        from_pretrained(tmp_path / "missing")
    # weights that do not fit config.json
    torch.manual_seed(0)
    hf = _hf_gpt2()
    hf.save_pretrained(tmp_path / "bad")
    cfg = json.loads((tmp_path / "bad" / "config.json").read_text())
    cfg["n_embd"] = 64
    (tmp_path / "bad" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not fit|output rows"):
        from_pretrained(tmp_path / "bad")
    # RMSNorm with a plain GELU and learned positions is neither GPT-2, GPT-NeoX nor Llama
    odd = GPT(GPTConfig(vocab_size=50, max_seq_len=8, n_layers=1, n_heads=2, dim=16, norm="rmsnorm"))
    with pytest.raises(ValueError, match="no Hugging Face architecture"):
        save_pretrained(odd, tmp_path / "odd")
