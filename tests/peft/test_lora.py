"""LoRA layers and models without a reference library: merge/unmerge, freezing, round trips, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer import registry
from glassformer.peft import (
    LoraConfig,
    LoraError,
    LoraLinear,
    inject_lora,
    load_adapter,
    lora_layers,
    lora_state_dict,
    merge_lora,
    parse_lora_spec,
    save_adapter,
    set_merged,
    trainable_parameters,
)


def _bert(**overrides: object) -> nn.Module:
    torch.manual_seed(0)
    return registry.build("bert-mini-tiny", head="sequence", num_labels=3, dropout=0.0, attn_dropout=0.0,
                          classifier_dropout=0.0, **overrides).eval()  # fmt: skip


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {"input_ids": torch.randint(1, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}


def _nonzero_b(model: nn.Module) -> None:
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.weight.normal_(std=0.3)


def test_lora_linear_is_base_plus_scaled_low_rank() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = LoraLinear(base, r=2, alpha=3.0)
    x = torch.randn(4, 6)
    torch.testing.assert_close(layer(x), base(x))  # B starts at zero
    nn.init.normal_(layer.lora_B.weight)
    a, b = layer.lora_A.weight, layer.lora_B.weight
    torch.testing.assert_close(layer(x), base(x) + 1.5 * x @ a.T @ b.T)
    rs = LoraLinear(nn.Linear(6, 5), r=4, alpha=3.0, use_rslora=True, init="gaussian")
    assert rs.scaling == pytest.approx(3.0 / math.sqrt(4))
    assert rs.weight is rs.base.weight and rs.in_features == 6 and rs.out_features == 5


def test_dropout_is_on_the_lora_branch_only() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    layer = LoraLinear(base, r=2, alpha=2.0, dropout=0.9).train()
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), base(x))  # B = 0: dropout must leave the base path alone
    nn.init.normal_(layer.lora_B.weight)
    assert not torch.allclose(layer(x), layer.eval()(x))


def test_merge_and_unmerge_are_exact_in_float64() -> None:
    torch.manual_seed(0)
    base = nn.Linear(16, 12).double()
    original = base.weight.detach().clone()
    layer = LoraLinear(base, r=4, alpha=8.0).double()
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(5, 16, dtype=torch.float64)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged and not torch.equal(base.weight, original)
    torch.testing.assert_close(layer(x), unmerged, atol=1e-12, rtol=1e-12)
    layer.unmerge()
    assert torch.equal(base.weight, original)  # bit for bit
    with pytest.raises(LoraError, match="not merged"):
        layer.unmerge()


def test_inject_freezes_all_but_adapters_and_saved_head() -> None:
    model = _bert()
    total = trainable_parameters(model).total
    inject_lora(model, LoraConfig(r=2, alpha=4, target=("q_proj", "v_proj"), modules_to_save=("classifier",)))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {n for n in names if "lora_" in n or n.startswith("classifier.")}
    assert {"classifier.weight", "classifier.bias"} <= names
    count = trainable_parameters(model)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    head = sum(p.numel() for p in model.classifier.parameters())
    assert count.trainable == lora + head and count.total == total + lora
    assert str(count).startswith("trainable params: ")
    model(**_batch(), labels=torch.tensor([0, 2])).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_all_linear_leaves_out_the_output_layer() -> None:
    torch.manual_seed(0)
    gpt = registry.build("smollm2-135m-tiny")
    inject_lora(gpt, LoraConfig(r=2, target="all-linear"))
    chosen = {n.rsplit(".", 1)[1] for n, _ in lora_layers(gpt)}
    assert chosen == {"q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down"}


def test_merge_lora_gives_a_plain_model_with_the_same_function() -> None:
    model = _bert()
    inject_lora(model, LoraConfig(r=2, target=".*attn\\.(q|v)_proj", modules_to_save=("classifier",)))
    _nonzero_b(model)
    batch = _batch()
    with torch.no_grad():
        want = model(**batch).logits
        set_merged(model, True)
        torch.testing.assert_close(model(**batch).logits, want, atol=1e-5, rtol=1e-5)
        set_merged(model, False)
        merge_lora(model)
        torch.testing.assert_close(model(**batch).logits, want, atol=1e-5, rtol=1e-5)
    assert not list(lora_layers(model)) and set(model.state_dict()) == set(_bert().state_dict())


def test_adapter_round_trip_keeps_head_trainable(tmp_path: Path) -> None:
    model = _bert()
    inject_lora(model, LoraConfig(r=2, alpha=4, target=("q_proj", "v_proj"), modules_to_save=("classifier",)))
    _nonzero_b(model)
    with torch.no_grad():
        model.classifier.weight.normal_()
        want = model(**_batch()).logits
    save_adapter(model, tmp_path / "a", base_name="bert-mini-tiny")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["modules_to_save"] == ["classifier"] and saved["base_model_name_or_path"] == "bert-mini-tiny"
    again = load_adapter(_bert(), tmp_path / "a")
    with torch.no_grad():
        torch.testing.assert_close(again(**_batch()).logits, want)
    assert (
        again.classifier.weight.requires_grad and not again.encoder.layers[0].attn.k_proj.weight.requires_grad
    )
    assert set(lora_state_dict(again)) == set(lora_state_dict(model))


# ---------------------------------------------------------------------------------------------
# bad input


def test_target_matching_nothing_lists_the_layers() -> None:
    with pytest.raises(LoraError, match=r"matches no linear layer.*did you mean 'q_proj'.*o_proj"):
        inject_lora(_bert(), LoraConfig(target=("q_prj",)))


def test_rank_larger_than_the_layer_is_refused() -> None:
    with pytest.raises(LoraError, match=r"q_proj: rank r=64 is larger .*min\(in, out\) = 32"):
        inject_lora(_bert(), LoraConfig(r=64))


def test_injecting_twice_is_refused(tmp_path: Path) -> None:
    model = inject_lora(_bert(), LoraConfig(r=2))
    with pytest.raises(LoraError, match="already carries LoRA"):
        inject_lora(model, LoraConfig(r=2))
    save_adapter(model, tmp_path / "a")
    with pytest.raises(LoraError, match="already carries LoRA"):
        load_adapter(model, tmp_path / "a")


def test_adapter_for_another_base_is_refused_naming_both(tmp_path: Path) -> None:
    model = inject_lora(_bert(), LoraConfig(r=2))
    save_adapter(model, tmp_path / "a", base_name="bert-mini-tiny")
    other = registry.build("bert-mini-tiny", head="sequence", num_labels=5)
    with pytest.raises(
        LoraError, match=r"trained on bert-mini-tiny .*config [0-9a-f]{16}\).*not on this model \(my-5-label"
    ):
        load_adapter(other, tmp_path / "a", base_name="my-5-label")
    same = registry.build("bert-mini-tiny", head="sequence", num_labels=3, dropout=0.3)  # dropout: no matter
    assert len(list(lora_layers(load_adapter(same, tmp_path / "a")))) == 4
    (tmp_path / "a" / "glassformer_adapter.json").unlink()  # as peft writes it: the base's name only
    with pytest.raises(LoraError, match="trained on 'bert-mini-tiny', not on 'gpt2'"):
        load_adapter(_bert(), tmp_path / "a", base_name="gpt2")


def test_bad_configs_and_specs() -> None:
    with pytest.raises(LoraError, match="r=0"):
        LoraConfig(r=0)
    with pytest.raises(LoraError, match="not a valid regular expression"):
        LoraConfig(target="q_proj(")
    with pytest.raises(LoraError, match="modules_to_save entry 'clasifier'.*did you mean 'classifier'"):
        inject_lora(_bert(), LoraConfig(modules_to_save=("clasifier",)))
    spec = parse_lora_spec("r=8,alpha=16,target=q_proj|v_proj,dropout=0.05,save=classifier,rslora=true")
    assert spec == LoraConfig(r=8, alpha=16.0, dropout=0.05, target=("q_proj", "v_proj"),
                              modules_to_save=("classifier",), use_rslora=True)  # fmt: skip
    assert parse_lora_spec("target=all-linear").target == "all-linear"
    for bad, message in (("r=eight", "r='eight': expected an integer"), ("rank=8", "unknown key 'rank'"),
                         ("r8", "is not KEY=VALUE"), ("r=4,r=8", "given twice")):  # fmt: skip
        with pytest.raises(LoraError, match=message):
            parse_lora_spec(bad)


class _DequantizingLinear(nn.Module):
    """The duck type a quantized layer offers: sizes and a ``weight`` that is computed, not stored."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("codes", (linear.weight.detach() * 64).round().to(torch.int8))
        self.reads = 0

    @property
    def weight(self) -> torch.Tensor:
        self.reads += 1
        return self.codes.float() / 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T


def test_lora_over_a_quantized_base_trains_and_refuses_to_merge() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    model[0] = _DequantizingLinear(model[0])
    inject_lora(model, LoraConfig(r=2, target=("0",)))
    layer = model[0]
    assert isinstance(layer, LoraLinear) and layer.base.reads == 1  # finding targets reads no weight
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 8)
    torch.testing.assert_close(
        model(x), torch.relu(layer.base(x) + layer.scaling * x @ layer.delta_weight().T / layer.scaling)
    )
    model(x).sum().backward()
    assert layer.lora_A.weight.grad is not None
    with pytest.raises(
        LoraError, match="cannot merge into a _DequantizingLinear.*keeps its adapter unmerged"
    ):
        layer.merge()


def test_gpt2_adapter_falls_back_to_our_names_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = inject_lora(registry.build("gpt2-tiny").eval(), LoraConfig(r=2, target=("q_proj", "o_proj")))
    _nonzero_b(model)
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    with pytest.warns(UserWarning, match="stack.layers.0.attn.q_proj has no one-to-one Hugging Face tensor"):
        save_adapter(model, tmp_path / "a")
    torch.manual_seed(0)
    again = load_adapter(registry.build("gpt2-tiny").eval(), tmp_path / "a")
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, want)
