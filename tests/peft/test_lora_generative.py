"""LoRA on a decoder end to end: SmolLM2's tiny twin trains a few engine steps on the house-style
task through a chat template, the adapter is saved in peft's format, and `glassformer chat
CHECKPOINT --adapter DIR` replies exactly as the trained model does."""

from __future__ import annotations

import io
import json

import pytest
import torch

from glassformer.cli import main
from glassformer.data.house_style import ChatSftData, make_examples
from glassformer.generate import GenerationConfig, generate
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import smollm2_135m, tiny
from glassformer.models.gpt.gguf import apply_chat_template
from glassformer.peft import LoraConfig, inject_lora, lora_layers, merge_lora, save_adapter
from glassformer.tokenizers import CharTokenizer
from glassformer.train import TrainConfig, Trainer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STEPS, NEW_TOKENS = 40, 12


def _render(instruction: str) -> str:
    return apply_chat_template([{"role": "user", "content": instruction}], True, CHATML)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("lora-gen")
    examples = make_examples(24, seed=5)
    text = "".join(e.instruction + e.answer for e in examples) + "systemuserassistant\n"
    tokenizer = CharTokenizer.from_text(
        text, special_tokens=["<|im_start|>", "<|im_end|>"], roles={"eos": "<|im_end|>"}
    )
    config = tiny(smollm2_135m(), vocab_size=tokenizer.vocab_size).replace(max_seq_len=192, init_std=0.3)
    torch.manual_seed(0)
    base = GPT(config)
    base.save(work / "base")
    tokenizer.save(work / "base")
    (work / "base" / "chat_template.jinja").write_text(CHATML)
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    model = inject_lora(base, LoraConfig(r=4, alpha=8, target="all-linear"))
    data = ChatSftData(examples, tokenizer, _render, "<|im_end|>", pad_id=0, max_len=config.max_seq_len)
    summary = Trainer(model, TrainConfig(
        out_dir=str(work / "run"), max_steps=STEPS, batch_size=8, lr=1e-2, weight_decay=0.0, warmup_steps=2,
        eval_interval=0, save_interval=STEPS, log_interval=1, progress=False, plot=False, precision="fp32",
    ), data).fit()  # fmt: skip
    losses = [json.loads(line)["loss"] for line in (work / "run" / "log.jsonl").read_text().splitlines()
              if json.loads(line).get("kind") == "train"]  # fmt: skip
    save_adapter(model, work / "adapter")
    return {"work": work, "model": model, "tokenizer": tokenizer, "frozen": frozen, "losses": losses,
            "summary": summary, "instruction": examples[0].instruction}  # fmt: skip


def test_only_the_adapters_train_and_the_loss_falls(trained: dict) -> None:
    model, losses = trained["model"], trained["losses"]
    assert trained["summary"].step == STEPS
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    moved = [n for n, layer in lora_layers(model) if layer.lora_B.weight.abs().max() > 0]
    assert len(moved) == len(list(lora_layers(model)))  # every B left zero
    base_now = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    for key, before in trained["frozen"].items():
        assert torch.equal(base_now[key], before), key


def test_adapter_is_in_peft_format_under_hugging_face_names(trained: dict) -> None:
    adapter = trained["work"] / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert "model.layers.0.self_attn.q_proj" in config["target_modules"]
    assert (adapter / "adapter_model.safetensors").is_file()


def test_chat_with_the_adapter_replies_as_the_trained_model(
    trained: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work, tokenizer, instruction = trained["work"], trained["tokenizer"], trained["instruction"]

    def chat(*extra: str) -> str:
        monkeypatch.setattr("sys.stdin", io.StringIO(instruction + "\n"))
        code = main(
            ["chat", str(work / "base"), *extra, "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS)]
        )
        assert code == 0
        out = capsys.readouterr().out
        return out[out.index("bot> ") + 5 :].split("\nyou> ")[0]

    merged = merge_lora(trained["model"]).eval()
    end = tokenizer.token_to_id("<|im_end|>")
    config = GenerationConfig(strategy="greedy", max_new_tokens=NEW_TOKENS, stop_token_ids=(end,))
    wanted = generate(
        merged, [tokenizer.encode(_render(instruction))], config=config, tokenizer=tokenizer
    ).texts[0]
    with_adapter = chat("--adapter", str(work / "adapter"))
    assert with_adapter == wanted
    assert with_adapter != chat()  # the base alone answers otherwise
