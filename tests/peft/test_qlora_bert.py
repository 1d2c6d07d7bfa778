"""QLoRA on a BERT classifier (``LoraConfig(quantize="nf4")``, ``--qlora``): the same numbers as LoRA
over the dequantized base, gradients only where they belong, a head that is trainable and saved,
a merge into a float model, backward that keeps no float copy of the 4-bit weights, bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer import registry
from glassformer.peft import (
    LoraConfig,
    LoraError,
    inject_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    parse_lora_spec,
    save_adapter,
)
from glassformer.quant import NF4Linear, QuantLinear, quantize_model

QLORA = LoraConfig(r=4, alpha=8, target="all-linear", modules_to_save=("classifier",), quantize="nf4")


def _bert() -> nn.Module:
    torch.manual_seed(0)
    return registry.build("bert-mini-tiny", head="sequence", num_labels=3, dropout=0.0, attn_dropout=0.0,
                          classifier_dropout=0.0).eval()  # fmt: skip


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {"input_ids": torch.randint(1, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long),
            "labels": torch.tensor([0, 2])}  # fmt: skip


def _qlora_and_reference() -> tuple[nn.Module, nn.Module]:
    """A QLoRA model with trained-looking adapters, and plain LoRA on float layers that hold exactly
    its dequantized weights, with the same adapter and head."""
    model = inject_lora(_bert(), QLORA)
    reference = _bert()
    with torch.no_grad():
        for name in model.quantization["layers"]:  # the names before the adapters wrapped them
            reference.get_submodule(name).weight.copy_(model.get_submodule(name).weight)
    inject_lora(reference, LoraConfig(**{**QLORA.__dict__, "quantize": None}))
    torch.manual_seed(1)
    with torch.no_grad():
        for (_, q), (_, f) in zip(lora_layers(model), lora_layers(reference), strict=True):
            q.lora_B.weight.normal_(std=0.3)
            f.lora_A.weight.copy_(q.lora_A.weight)
            f.lora_B.weight.copy_(q.lora_B.weight)
        model.classifier.weight.normal_(std=0.5)
        reference.classifier.load_state_dict(model.classifier.state_dict())
    return model, reference


def test_qlora_forward_and_gradients_equal_lora_on_the_dequantized_base() -> None:
    model, reference = _qlora_and_reference()
    assert sum(isinstance(m, NF4Linear) for m in model.modules()) == 6 * 2 + 1  # 6 per layer + pooler
    assert not isinstance(model.classifier, QuantLinear)
    out, ref = model(**_batch()), reference(**_batch())
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-6, rtol=1e-6)
    out.loss.backward()
    ref.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n or n.startswith("classifier.") for n in grads), sorted(grads)
    assert {"classifier.weight", "classifier.bias"} <= set(grads)
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def _saved_bytes(model: nn.Module) -> int:
    """Bytes autograd keeps for backward during one forward (what training's peak memory holds)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**_batch()).loss.backward()
    return total


def test_qlora_backward_keeps_no_float_copy_of_the_base_weights() -> None:
    model, reference = _qlora_and_reference()
    # the input needs a gradient in every layer after the first adapter: there plain autograd
    # through F.linear would keep each dequantized (out, in) float32 weight until backward
    weights = sum(m.in_features * m.out_features * 4 for m in model.modules() if isinstance(m, QuantLinear))
    assert _saved_bytes(reference) - _saved_bytes(model) > weights // 2


def test_qlora_adapter_and_head_survive_save_and_reload(tmp_path: Path) -> None:
    model, _ = _qlora_and_reference()
    save_adapter(model, tmp_path / "adapter", base_name="tiny")
    again = load_adapter(_bert(), tmp_path / "adapter", base_name="tiny")  # a float base, requantized
    assert isinstance(again.get_submodule("encoder.layers.0.attn.q_proj").base, NF4Linear)
    assert again.classifier.weight.requires_grad and again.classifier.bias.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(again(**_batch()).logits, model(**_batch()).logits, atol=0, rtol=0)
    trainable = {n for n, p in again.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in model.named_parameters() if p.requires_grad}


def test_qlora_merges_into_a_plain_float_model() -> None:
    model, _ = _qlora_and_reference()
    with torch.no_grad():
        before = model(**_batch()).logits
        merge_lora(model)
        assert not any(isinstance(m, QuantLinear) for m in model.modules())
        assert not hasattr(model, "quantization") and not list(lora_layers(model))
        plain = _bert()
        plain.load_state_dict(model.state_dict())  # strict: the base's own names and shapes again
        torch.testing.assert_close(plain(**_batch()).logits, before, atol=1e-5, rtol=1e-5)


def test_qlora_spec_and_bad_input() -> None:
    assert parse_lora_spec("r=4,target=all-linear", qlora=True).quantize == "nf4"
    assert parse_lora_spec("r=4,quant=fp4", qlora=True).quantize == "fp4"
    assert parse_lora_spec("r=4").quantize is None
    with pytest.raises(LoraError, match="--qlora: unknown key 'rank'"):
        parse_lora_spec("rank=4", qlora=True)
    with pytest.raises(LoraError, match="quantize='int8'.*nf4, fp4"):
        parse_lora_spec("quant=int8", qlora=True)
    with pytest.raises(LoraError, match="needs a float base.*already quantized"):
        inject_lora(quantize_model(_bert(), to="nf4"), QLORA)
    user_quantized = inject_lora(quantize_model(_bert(), to="int8"), LoraConfig(r=2, target="all-linear"))
    with pytest.raises(LoraError, match="quantized base that merging would turn back into float32"):
        merge_lora(copy.deepcopy(user_quantized))


def test_finetune_qlora_flag_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from glassformer.cli import main
    from glassformer.models.bert import Bert
    from glassformer.models.bert.finetune import load_classifier, with_classifier
    from tests.peft.test_lora_finetune import _tokenizer, _write_rows

    tok = _tokenizer()
    torch.manual_seed(0)
    config = registry.get("bert-mini-tiny").make_config().replace(vocab_size=tok.vocab_size)
    Bert(config).save(tmp_path / "base")
    tok.save(tmp_path / "base")
    _write_rows(tmp_path / "train.csv", 48, 0)
    _write_rows(tmp_path / "val.csv", 16, 1)
    args = ["finetune", "bert", "--from", str(tmp_path / "base"), "--train", str(tmp_path / "train.csv"),
            "--val-file", str(tmp_path / "val.csv"), "--out", str(tmp_path / "run"), "--batch-size", "16",
            "--max-len", "12", "--set", "progress=false", "--set", "plot=false"]  # fmt: skip
    assert main([*args, "--lora", "r=2", "--qlora", "r=2"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*args, "--qlora", "r=2,alpha=4,target=all-linear"]) == 0
    merged, _ = load_classifier(tmp_path / "run" / "model")  # float: classify opens it as any model
    assert not any(isinstance(m, QuantLinear) for m in merged.modules())
    again = with_classifier(Bert.load(tmp_path / "base"), ["neg", "pos"])
    load_adapter(again, tmp_path / "run" / "adapter", base_name=str(tmp_path / "base"))
    assert isinstance(again.get_submodule("encoder.layers.1.ffn.down").base, NF4Linear)
    ids = torch.tensor([[2, 5, 15, 3], [2, 10, 16, 3]])
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(input_ids=ids).logits, merged(input_ids=ids).logits,
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
