"""Quantized layers decode through the C kernels: same numbers as the dequantizing path, the right
path for each input, a one-time warning where the CPU cannot help, and ``generate --quant``."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import glassformer.quant.linear as qlinear
from glassformer.cli import main
from glassformer.generate.decode import generate
from glassformer.generate.loading import load_checkpoint
from glassformer.kernels import available, build, isa, unavailable_reason
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import GPTConfig
from glassformer.quant import Int8Linear, NF4Linear, QuantLinear, quantize_model, save_quantized
from glassformer.quant import kernel as qkernel
from glassformer.tokenizers import CharTokenizer

needs_kernels = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")
TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?\n0123"  # 63 characters + <eos>


def _layers() -> list[QuantLinear]:
    torch.manual_seed(0)
    linear = nn.Linear(128, 48)
    return [Int8Linear.from_linear(linear), NF4Linear.from_linear(linear), NF4Linear.from_linear(linear, "fp4")]


@needs_kernels
@pytest.mark.parametrize("rows", [1, 4, 8, 13, qlinear.KERNEL_ROWS])
def test_the_kernel_path_equals_the_dequantizing_path(rows):
    """Decoding steps (1 to 8 rows, one call) and short prompts (8 rows per call) alike."""
    x = torch.randn(rows, 128)
    for layer in _layers():
        assert layer.decode_path == f"kernel ({isa()})"
        with torch.inference_mode():
            got = layer(x)
        want = layer._torch_forward(x)
        assert got.shape == want.shape == (rows, 48)
        # int8 quantizes x to 16 bits (~1e-5); 4-bit sums the same weights in another order (~1e-7)
        tol = 1e-4 if layer.format == "int8" else 1e-6
        assert (got - want).abs().max() <= tol * want.abs().max(), layer


@needs_kernels
def test_prompts_autograd_and_outliers_take_pytorch(monkeypatch):
    """A prompt longer than KERNEL_ROWS, an input that needs gradients (QLoRA training) or
    LLM.int8()'s outliers: the kernels are not called. Up to KERNEL_ROWS, 8 rows per call."""
    calls: list[int] = []
    real = qlinear.int4_plan

    def counting(*args):
        plan = real(*args)
        return lambda x: calls.append(x.numel() // 128) or plan(x)

    monkeypatch.setattr(qlinear, "int4_plan", counting)
    layer = _layers()[1]
    with torch.no_grad():
        layer(torch.randn(2, 4, 128))  # 8 rows: kernel
        layer(torch.randn(1, 19, 128))  # a short prompt: kernel, 8 + 8 + 3
        layer(torch.randn(qlinear.KERNEL_ROWS + 1, 128))  # a long prompt: PyTorch
    x = torch.randn(1, 128, requires_grad=True)
    layer(x).sum().backward()
    assert calls == [8, 8, 8, 3] and x.grad is not None
    outliers = Int8Linear.from_linear(nn.Linear(128, 8), threshold=6.0)
    assert outliers.decode_path.startswith("torch: LLM.int8() outlier decomposition")
    odd = NF4Linear.from_linear(nn.Linear(96, 8))
    assert odd.decode_path == "torch: in_features=96 is not a multiple of 64, so 4-bit blocks cross weight rows"
    assert "decode_path='torch: in_features=96" in repr(odd)


def _fresh_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qkernel, "_status", {})
    monkeypatch.setattr(qkernel, "_warned", set())


def test_no_kernels_falls_back_with_one_warning(monkeypatch):
    """A path the CPU cannot run (here: AVX-512 VNNI asked for, flags hidden) loads no library; the
    layer says why once and decodes with PyTorch, same numbers."""
    _fresh_status(monkeypatch)
    monkeypatch.setattr(build, "cpu_flags", lambda: {"sse2", "avx2", "fma"})
    monkeypatch.setitem(build._by_isa, "avx512_vnni", (None, build._open("avx512_vnni")[1]))
    monkeypatch.setattr(build, "_state", {"lib": None, "reason": build.unavailable_reason("avx512_vnni")})
    layer = _layers()[1]
    x = torch.randn(1, 128)
    with pytest.warns(UserWarning, match="need CPU flag.*avx512_vnni, which this CPU lacks.*only slower"):
        with torch.no_grad():
            got = layer(x)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error")  # once only
        layer(x)
    torch.testing.assert_close(got, layer._torch_forward(x), rtol=0, atol=0)
    assert layer.decode_path.startswith("torch: the avx512_vnni kernels need CPU flag(s)")


@needs_kernels
def test_a_cpu_without_avx2_is_told_it_runs_plain_c(monkeypatch):
    _fresh_status(monkeypatch)
    build.load()
    monkeypatch.setitem(build._state, "lib", build.load("generic"))
    monkeypatch.setattr(qkernel, "configured_isa", lambda: "native")
    monkeypatch.setattr(qkernel.platform, "machine", lambda: "x86_64")
    layer = _layers()[0]
    with pytest.warns(UserWarning, match="lacks AVX2 .* plain C code"), torch.no_grad():
        layer(torch.randn(1, 128))
    assert layer.decode_path == "kernel (generic), this CPU lacks AVX2 (see /proc/cpuinfo), so the int8/4-bit kernels run their plain C code"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A float GPT with 64-wide layers (the 4-bit kernel's block) and its tokenizer."""
    path = tmp_path_factory.mktemp("gpt64")
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, max_seq_len=48, n_layers=2, n_heads=4, dim=64, init_std=0.3)
    GPT(config).eval().save(path)
    CharTokenizer.from_text(TEXT, special_tokens=["<eos>"], roles={"eos": "<eos>"}).save(path)
    return path


@pytest.mark.parametrize("to", ["int8", "nf4"])
def test_generate_quant_decodes_the_quantized_model(folder, capsys, to):
    args = ["generate", str(folder), "--prompt", "hello", "--max-new-tokens", "10", "--ignore-eos"]
    assert main([*args, "--quant", to]) == 0
    printed = capsys.readouterr().out
    ckpt = load_checkpoint(folder)
    model = quantize_model(ckpt.model, to=to)
    if available():
        assert {m.decode_path for m in model.modules() if isinstance(m, QuantLinear)} == {f"kernel ({isa()})"}
    # the same tokens as the dequantizing path (a tie broken differently would show up here)
    expected = generate(model, "hello", tokenizer=ckpt.tokenizer, max_new_tokens=10, cpu_kernels=False).texts[0]
    assert printed == "hello" + expected + "\n"


def test_generate_quant_refuses_a_quantized_checkpoint(folder, tmp_path, capsys):
    ckpt = load_checkpoint(folder)
    quantized = save_quantized(quantize_model(ckpt.model, to="nf4"), tmp_path / "nf4")
    ckpt.tokenizer.save(quantized)
    assert main(["generate", str(quantized), "--prompt", "hi", "--quant", "int8"]) == 2
    assert f"{quantized} is already quantized (nf4); drop --quant int8" in capsys.readouterr().err
