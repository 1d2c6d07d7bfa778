"""QLoRA: LoRA over glassformer.quant's NF4 layers (quantize first, then inject), through the duck type."""

from __future__ import annotations

import pytest
import torch

from glassformer.peft import LoraConfig, LoraError, LoraLinear, inject_lora, lora_layers
from tests.generate.conftest import tiny_gpt

quant = pytest.importorskip("glassformer.quant")


def test_qlora_is_lora_over_the_dequantized_weights() -> None:
    model = quant.quantize_model(tiny_gpt("llama"), to="nf4")
    config = LoraConfig(r=4, alpha=8, target="all-linear")
    inject_lora(model, config)
    reference = tiny_gpt("llama")  # float layers holding exactly the dequantized weights
    with torch.no_grad():
        for name in model.quantization["layers"]:
            reference.get_submodule(name).weight.copy_(model.get_submodule(name).weight)
    inject_lora(reference, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for (_, q), (_, f) in zip(lora_layers(model), lora_layers(reference), strict=True):
            q.lora_B.weight.normal_(std=0.3)
            f.lora_A.weight.copy_(q.lora_A.weight)
            f.lora_B.weight.copy_(q.lora_B.weight)
    ids = torch.randint(0, 64, (2, 10))
    logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    logits.float().logsumexp(-1).mean().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trained and all(".lora_" in n for n in trained)
    layer = next(m for m in model.modules() if isinstance(m, LoraLinear))
    assert isinstance(layer.base, quant.NF4Linear)
    with pytest.raises(LoraError, match="cannot merge into a NF4Linear"):
        layer.merge()
