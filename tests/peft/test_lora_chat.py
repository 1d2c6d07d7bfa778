"""`glassformer chat CHECKPOINT --adapter DIR`: the adapter is merged in before the chat starts."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from glassformer.cli import main
from glassformer.peft import LoraConfig, inject_lora, lora_layers, merge_lora, save_adapter
from glassformer.tokenizers import CharTokenizer
from tests.generate.conftest import TEXT, tiny_gpt


def _transcript(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\nagain\n"))
    assert main(["chat", *args, "--temperature", "0", "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    return out[out.index("\n") :]  # the replies, without the banner (which names the model)


def test_chat_with_adapter_equals_chat_with_the_merged_model(tmp_path: Path, monkeypatch, capsys) -> None:
    tokenizer = CharTokenizer.from_text(TEXT, special_tokens=["<eos>"], roles={"eos": "<eos>"})
    tiny_gpt("llama").save(tmp_path / "base")
    tokenizer.save(tmp_path / "base")
    tuned = inject_lora(tiny_gpt("llama"), LoraConfig(r=4, alpha=8, target="all-linear"))
    with torch.no_grad():
        for _, layer in lora_layers(tuned):
            layer.lora_B.weight.normal_(std=0.5)
    save_adapter(tuned, tmp_path / "adapter")
    merge_lora(tuned).save(tmp_path / "merged")
    tokenizer.save(tmp_path / "merged")
    with_adapter = _transcript(
        monkeypatch, capsys, str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter")
    )
    assert with_adapter == _transcript(monkeypatch, capsys, str(tmp_path / "merged"))
    assert with_adapter != _transcript(monkeypatch, capsys, str(tmp_path / "base"))
    assert main(["chat", str(tmp_path / "base"), "--adapter", str(tmp_path / "nowhere")]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err
