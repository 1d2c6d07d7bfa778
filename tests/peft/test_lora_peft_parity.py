"""Our LoRA against Hugging Face ``peft`` on transformers' BERT and Llama: same numbers, same files.

Each test saves a small random transformers model, opens it with glassformer's loader, injects
LoRA on both sides, copies one set of random A/B matrices (B non-zero, so the branch counts) into
both, and compares outputs; then adapters cross over in both directions through the files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from glassformer.models.bert.hf import from_pretrained as bert_from_hf  # noqa: E402
from glassformer.models.gpt.hf import from_pretrained as gpt_from_hf  # noqa: E402
from glassformer.peft import (  # noqa: E402
    LoraConfig,
    LoraLinear,
    inject_lora,
    load_adapter,
    lora_layers,
    save_adapter,
    trainable_parameters,
)

BERT = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
LLAMA = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32, tie_word_embeddings=False)  # fmt: skip
# (HF target names, our target names)
BERT_TARGETS = (["query", "value"], ("q_proj", "v_proj"))
LLAMA_TARGETS = (["q_proj", "v_proj", "down_proj"], ("q_proj", "v_proj", "down"))


def _hf_bert(tmp_path: Path, cls: str) -> tuple[object, torch.nn.Module]:
    torch.manual_seed(0)
    hf = getattr(transformers, cls)(transformers.BertConfig(**BERT, num_labels=3)).eval()
    hf.save_pretrained(tmp_path / "base")
    return hf, bert_from_hf(tmp_path / "base").eval()


def _hf_llama(tmp_path: Path) -> tuple[object, torch.nn.Module]:
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    hf.save_pretrained(tmp_path / "base")
    return hf, gpt_from_hf(tmp_path / "base").eval()


def _randomise(model: torch.nn.Module) -> None:
    """Non-zero B (and a fresh head) so that a LoRA branch or a head left out would change the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or (p.requires_grad and "classifier" in name):
                p.copy_(torch.randn_like(p) * 0.2)


def _copy_into_ours(peft_model: torch.nn.Module, ours: torch.nn.Module, tmp_path: Path) -> None:
    """peft's A/B and saved head written by peft, read by us: the interchange under test."""
    peft_model.save_pretrained(tmp_path / "peft_adapter")
    load_adapter(ours, tmp_path / "peft_adapter")


def _ids() -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    ids = torch.randint(1, 60, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _bert_case(tmp_path: Path, cls: str, saved: list[str] | None):
    hf, ours = _hf_bert(tmp_path, cls)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=BERT_TARGETS[0],
                                                 modules_to_save=saved)).eval()  # fmt: skip
    _randomise(pm)
    _copy_into_ours(pm, ours, tmp_path)
    return pm, ours


def test_bert_classifier_matches_peft_and_head_is_saved_and_trainable(tmp_path: Path) -> None:
    pm, ours = _bert_case(tmp_path, "BertForSequenceClassification", ["classifier"])
    batch = _ids()
    with torch.no_grad():
        want = pm(**batch).logits
        got = ours(**batch).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable_parameters(ours).trainable == pm.get_nb_trainable_parameters()[0]
    assert {"classifier.weight", "classifier.bias"} <= trainable
    assert all("lora_" in n or n.startswith("classifier.") for n in trainable)
    # our file back into peft on a fresh transformers model: the head comes back too
    save_adapter(ours, tmp_path / "ours", base_name=str(tmp_path / "base"))
    fresh = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "base").eval()
    again = peft.PeftModel.from_pretrained(fresh, tmp_path / "ours", is_trainable=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(**batch).logits, want, atol=1e-5, rtol=1e-5)
    assert any("classifier" in n and p.requires_grad for n, p in again.named_parameters())


def test_bert_encoder_matches_peft(tmp_path: Path) -> None:
    pm, ours = _bert_case(tmp_path, "BertModel", None)
    batch = _ids()
    with torch.no_grad():
        want = pm(**batch).last_hidden_state
        got = ours(**batch).hidden_states
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert len(list(lora_layers(ours))) == 4


def _llama_pair(tmp_path: Path, *, rslora: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    hf, ours = _hf_llama(tmp_path)
    cfg = peft.LoraConfig(r=4, lora_alpha=16, target_modules=LLAMA_TARGETS[0], use_rslora=rslora)
    pm = peft.get_peft_model(hf, cfg).eval()
    _randomise(pm)
    inject_lora(ours, LoraConfig(r=4, alpha=16, target=LLAMA_TARGETS[1], use_rslora=rslora))
    theirs = dict(pm.named_parameters())
    with torch.no_grad():  # the same A/B copied by name, not through files: the math alone
        for name, layer in lora_layers(ours):
            i = name.split(".")[2]
            hf_name = {"q_proj": "self_attn.q_proj", "v_proj": "self_attn.v_proj", "down": "mlp.down_proj"}[
                name.rsplit(".", 1)[1]
            ]
            stem = f"base_model.model.model.layers.{i}.{hf_name}"
            layer.lora_A.weight.copy_(theirs[f"{stem}.lora_A.default.weight"])
            layer.lora_B.weight.copy_(theirs[f"{stem}.lora_B.default.weight"])
    return pm, ours


@pytest.mark.parametrize("rslora", [False, True])
def test_llama_matches_peft(tmp_path: Path, rslora: bool) -> None:
    pm, ours = _llama_pair(tmp_path, rslora=rslora)
    ids = _ids()["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, pm(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_llama_adapters_cross_both_ways(tmp_path: Path) -> None:
    pm, ours = _llama_pair(tmp_path, rslora=False)
    ids = _ids()["input_ids"]
    with torch.no_grad():
        want = pm(input_ids=ids).logits
    save_adapter(ours, tmp_path / "ours", base_name="tiny-llama")
    fresh = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "base").eval()
    again = peft.PeftModel.from_pretrained(fresh, tmp_path / "ours").eval()
    pm.save_pretrained(tmp_path / "theirs")
    mine = load_adapter(gpt_from_hf(tmp_path / "base").eval(), tmp_path / "theirs")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(mine(input_ids=ids).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("init", ["kaiming", "gaussian"])
def test_initialisation_is_peft_s(init: str) -> None:
    """B starts at zero and A is drawn as peft draws it: from the same seed, the same numbers."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(64, 48))
    kind = True if init == "kaiming" else "gaussian"
    theirs = peft.get_peft_model(base, peft.LoraConfig(r=8, target_modules=["0"], init_lora_weights=kind))
    torch.manual_seed(0)
    ours = LoraLinear(torch.nn.Linear(64, 48), r=8, alpha=8, init=init)
    assert not ours.lora_B.weight.any()
    torch.testing.assert_close(
        ours.lora_A.weight, theirs.base_model.model[0].lora_A["default"].weight, rtol=0, atol=0
    )
