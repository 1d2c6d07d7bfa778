"""Quantized layers and models: closeness to float, save/load through load_model, refusals, generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer import registry
from glassformer.cli import main
from glassformer.generate.decode import generate
from glassformer.models import load_model
from glassformer.quant import (
    Int8Linear,
    NF4Linear,
    folder_bytes,
    is_quantized,
    load_quantized,
    memory_bytes,
    quantize_model,
    save_quantized,
    size_report,
)

PRESET = "shakespeare-char-llama-tiny"


def _linear(seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(128, 48, bias=bias)


def _gpt() -> nn.Module:
    torch.manual_seed(0)
    return registry.build(PRESET).eval()


@pytest.mark.parametrize(("make", "rtol"), [(Int8Linear.from_linear, 0.01), (NF4Linear.from_linear, 0.12)])
def test_quant_linear_is_close_to_float(make, rtol: float) -> None:
    linear = _linear()
    layer = make(linear)
    x = torch.randn(3, 5, 128)
    assert (layer.in_features, layer.out_features) == (128, 48)
    assert layer.weight.shape == linear.weight.shape and layer.weight.dtype == torch.float32
    exact, ours = linear(x), layer(x)
    assert ours.shape == exact.shape
    assert ((ours - exact).norm() / exact.norm()).item() < rtol
    # forward is exactly F.linear with the dequantized weight (what LoRA wraps, duck-typed)
    torch.testing.assert_close(ours, nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=0)


def test_int8_layer_outlier_path() -> None:
    linear = _linear(1)
    layer = Int8Linear.from_linear(linear, threshold=6.0)
    x = torch.randn(2, 4, 128)
    x[0, 1, 7] = 40.0  # one outlier feature
    no_outliers = Int8Linear.from_linear(linear, threshold=float("inf"))  # every activation in int8
    exact = linear(x)
    error = (layer(x) - exact).abs().max()
    assert error < 0.25 * (no_outliers(x) - exact).abs().max()  # one outlier coarsens its whole row
    assert error < 0.04
    assert "threshold=6.0" in repr(layer)


def test_wrong_input_size_is_named() -> None:
    with pytest.raises(ValueError, match="takes 128"):
        NF4Linear.from_linear(_linear())(torch.randn(2, 5))


@pytest.mark.parametrize("to", ["int8", "nf4"])
def test_quantized_gpt_saves_loads_and_generates(tmp_path: Path, to: str) -> None:
    model = _gpt()
    ids = torch.randint(0, model.config.vocab_size, (2, 8))
    reference = model(input_ids=ids).logits
    quantize_model(model, to)
    assert "lm_head" not in model.quantization["layers"] and model.lm_head.weight is model.wte.weight
    logits = model(input_ids=ids).logits
    assert ((logits - reference).norm() / reference.norm()).item() < (0.02 if to == "int8" else 0.15)

    save_quantized(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["family"] == "gpt" and config["quantization"]["format"] == to
    loaded = load_model(tmp_path)  # the ordinary entry point opens quantized folders
    assert is_quantized(loaded) and memory_bytes(loaded) == memory_bytes(model)
    torch.testing.assert_close(loaded(input_ids=ids).logits, logits, rtol=0, atol=0)
    out = generate(loaded, ids[:1], max_new_tokens=6, cpu_kernels=False)
    assert out.sequences.shape == (1, 14)
    assert torch.equal(out.sequences, generate(model, ids[:1], max_new_tokens=6, cpu_kernels=False).sequences)


def test_sizes_shrink_per_format(tmp_path: Path) -> None:
    sizes = {"float32": memory_bytes(_gpt())}
    for to in ("int8", "nf4"):
        model = quantize_model(_gpt(), to)
        report = size_report(model)
        assert report["memory_bytes"] == report["quantized_layer_bytes"] + report["other_bytes"]
        sizes[to] = report["quantized_layer_bytes"]
        save_quantized(model, tmp_path / to, rest_dtype="bfloat16")
        save_quantized(model, tmp_path / f"{to}-32", rest_dtype="float32")
        saved = folder_bytes(tmp_path / f"{to}-32") - folder_bytes(tmp_path / to)
        assert abs(saved - report["other_bytes"] // 2) < 256  # the rest in 16 bits (headers differ a little)
    floats = sum(m.weight.numel() * 4 for n, m in _gpt().named_modules() if isinstance(m, nn.Linear) and n != "lm_head")
    assert sizes["int8"] < 0.3 * floats and sizes["nf4"] < 0.17 * floats  # ~1/4 (+scales), ~1/7.5


def test_bfloat16_rest_round_trips_to_float32(tmp_path: Path) -> None:
    model = quantize_model(_gpt(), "nf4")
    save_quantized(model, tmp_path, rest_dtype="bfloat16")
    loaded = load_quantized(tmp_path)
    assert loaded.wte.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.wte.weight, model.wte.weight.bfloat16().float(), rtol=0, atol=0)
    ours = {n: m.packed for n, m in loaded.named_modules() if isinstance(m, NF4Linear)}
    theirs = {n: m.packed for n, m in model.named_modules() if isinstance(m, NF4Linear)}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[n], theirs[n]) for n in ours)


def test_refusals_are_clear(tmp_path: Path) -> None:
    model = quantize_model(_gpt(), "int8")
    with pytest.raises(ValueError, match="already quantized.*int8"):
        quantize_model(model, "nf4")
    with pytest.raises(ValueError, match="to='nf3'"):
        quantize_model(_gpt(), "nf3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        quantize_model(_gpt(), "nf4", threshold=6.0)
    with pytest.raises(ValueError, match="no nn.Linear layer to quantize"):
        quantize_model(_gpt(), "int8", skip=("*",))
    with pytest.raises(ValueError, match="not quantized"):
        save_quantized(_gpt(), tmp_path)


def test_quantize_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _gpt().save(tmp_path / "float")
    assert main(["quantize", str(tmp_path / "float"), "--to", "nf4", "--out", str(tmp_path / "q")]) == 0
    assert "to nf4" in capsys.readouterr().out
    assert load_model(tmp_path / "q").quantization["format"] == "nf4"
    assert main(["quantize", str(tmp_path / "q"), "--to", "int8", "--out", str(tmp_path / "qq")]) == 2
    assert "already quantized" in capsys.readouterr().err


def _run(model: nn.Module, batch: dict) -> torch.Tensor:
    torch.manual_seed(5)  # a family whose forward draws noise (diffusion) draws the same
    out = model(**batch)
    return out.logits if out.logits is not None else out.loss


@pytest.mark.parametrize("name", sorted(registry.families()))
def test_every_family_quantizes_and_round_trips(tmp_path: Path, name: str) -> None:
    """Every family's tiny twin: its linears swapped, a forward, the saved folder opens equal."""
    family = registry.family(name)
    torch.manual_seed(0)
    model = registry.build(next(iter(family.presets)) + "-tiny").eval()
    batch = family.example_batch(model.config)
    quantize_model(model, "nf4")
    assert model.quantization["layers"] and not any(isinstance(m, nn.Linear) for n, m in model.named_modules()
                                                    if n in model.quantization["layers"])  # fmt: skip
    expected = _run(model, batch)
    save_quantized(model, tmp_path)
    torch.testing.assert_close(_run(load_model(tmp_path).eval(), batch), expected, rtol=0, atol=0)
