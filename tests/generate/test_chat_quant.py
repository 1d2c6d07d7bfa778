"""`glassformer chat CHECKPOINT --quant int8|nf4`: the chat decodes the model quantized in memory.

The same semantics as ``generate --quant``: the float checkpoint is quantized once before the chat
starts (after merging an ``--adapter``), and an already quantized checkpoint is refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from glassformer.cli import main
from glassformer.generate import cli as generate_cli
from glassformer.generate.loading import load_checkpoint
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import LLAMA_STYLE, GPTConfig
from glassformer.peft import LoraConfig, inject_lora, lora_layers, merge_lora, save_adapter
from glassformer.quant import QuantLinear, quantize_model, save_quantized
from glassformer.tokenizers import CharTokenizer
from tests.generate.conftest import TEXT


def _gpt64() -> GPT:
    """A float Llama-style GPT with 64-wide layers (the 4-bit kernel's block); std 0.3 varies the replies."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, max_seq_len=64, n_layers=2, n_heads=4, dim=64, init_std=0.3, n_kv_heads=2,
                       **LLAMA_STYLE)  # fmt: skip
    return GPT(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT, special_tokens=["<eos>"], roles={"eos": "<eos>"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("chat-gpt64")
    _gpt64().save(path)
    tokenizer.save(path)
    return path


def _chat(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[str, object]:
    """The replies of a scripted greedy chat, and the model the chat decoded with."""
    seen: list[object] = []
    run = generate_cli.run_chat

    def spy(session, *rest, **kwargs):
        seen.append(session.model)
        return run(session, *rest, **kwargs)

    monkeypatch.setattr(generate_cli, "run_chat", spy)
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    assert main(["chat", *args, "--temperature", "0", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    return out[out.index("\n") :], seen[0]  # without the banner, which names the model


def _formats(model) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, QuantLinear)}


@pytest.mark.parametrize("to, layer", [("int8", "Int8Linear"), ("nf4", "NF4Linear")])
def test_chat_quant_equals_chat_with_the_quantized_folder(
    folder, tokenizer, tmp_path, monkeypatch, capsys, to, layer
):
    replies, model = _chat(monkeypatch, capsys, str(folder), "--quant", to)
    assert _formats(model) == {layer}
    assert model.quantization["format"] == to
    # `glassformer quantize`'s folder, opened as it is, must chat the same
    saved = save_quantized(quantize_model(load_checkpoint(folder).model, to=to), tmp_path / to)
    tokenizer.save(saved)
    assert replies == _chat(monkeypatch, capsys, str(saved))[0]
    _, float_model = _chat(monkeypatch, capsys, str(folder))
    assert not _formats(float_model)


def test_chat_quant_quantizes_after_merging_the_adapter(folder, tokenizer, tmp_path, monkeypatch, capsys):
    tuned = inject_lora(_gpt64(), LoraConfig(r=4, alpha=8, target="all-linear"))
    with torch.no_grad():
        for _, lora in lora_layers(tuned):
            lora.lora_B.weight.normal_(std=0.5)
    save_adapter(tuned, tmp_path / "adapter")
    merged = quantize_model(merge_lora(tuned), to="nf4")
    saved = save_quantized(merged, tmp_path / "merged-nf4")
    tokenizer.save(saved)
    replies, model = _chat(
        monkeypatch, capsys, str(folder), "--adapter", str(tmp_path / "adapter"), "--quant", "nf4"
    )
    assert _formats(model) == {"NF4Linear"}
    assert replies == _chat(monkeypatch, capsys, str(saved))[0]
    # the adapter mattered: without it the quantized chat answers differently
    assert replies != _chat(monkeypatch, capsys, str(folder), "--quant", "nf4")[0]


def test_chat_quant_refuses_a_quantized_checkpoint(folder, tokenizer, tmp_path, capsys):
    saved = save_quantized(quantize_model(load_checkpoint(folder).model, to="nf4"), tmp_path / "nf4")
    tokenizer.save(saved)
    assert main(["chat", str(saved), "--quant", "int8"]) == 2
    assert f"{saved} is already quantized (nf4); drop --quant int8" in capsys.readouterr().err
