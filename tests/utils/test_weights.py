"""The one weights I/O: atomic writes, strict loading that names keys, clear errors for bad folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from glassformer.cli import main
from glassformer.utils.weights import (
    WeightsError,
    load_into,
    model_state,
    read_config,
    read_hf_folder,
    read_safetensors,
    read_torch_weights,
    save_model_weights,
    write_hf_folder,
    write_safetensors,
)


class Unsafe:
    """Any class: unpickling it would mean running code that the file names."""


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight
        self.extra = nn.Linear(3, 2)


def test_round_trip_stores_tied_tensors_once(tmp_path: Path) -> None:
    model = Tied()
    path = save_model_weights(model, tmp_path / "w.safetensors")
    state = read_safetensors(path)
    assert "embed.weight" in state and "head.weight" not in state
    fresh = Tied()
    load_into(fresh, state, source=str(path))
    torch.testing.assert_close(fresh.head.weight, model.embed.weight)
    assert not list(tmp_path.glob(".*tmp")), "the temporary file must be gone after the rename"


def test_strict_loading_names_every_bad_key() -> None:
    state = {k: v for k, v in model_state(Tied()).items() if k != "extra.bias"}
    state["stray.weight"] = torch.zeros(1)
    state["extra.weight"] = torch.zeros(4, 4)
    with pytest.raises(WeightsError) as err:
        load_into(Tied(), state, source="ckpt")
    message = str(err.value)
    assert "missing (1): extra.bias" in message
    assert "unexpected (1): stray.weight" in message
    assert "mis-shaped (1): extra.weight (4, 4) (model: (2, 3))" in message


def test_new_heads_are_an_explicit_opt_in() -> None:
    state = {k: v for k, v in model_state(Tied()).items() if not k.startswith("extra.")}
    state["old_head.weight"] = torch.zeros(2)
    with pytest.raises(WeightsError, match="missing"):
        load_into(Tied(), state, source="ckpt", unused=("old_head.*",))
    report = load_into(Tied(), state, source="ckpt", new=("extra.*",), unused=("old_head.*",))
    assert report.new == ["extra.weight", "extra.bias"] and report.unused == ["old_head.weight"]


def test_truncated_file_is_named_as_incomplete(tmp_path: Path) -> None:
    path = write_safetensors({"a": torch.randn(64, 64)}, tmp_path / "model.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"model.safetensors: incomplete or corrupt safetensors file"):
        read_safetensors(path)
    path.write_bytes(data[:5])
    with pytest.raises(WeightsError, match="incomplete or corrupt"):
        read_safetensors(path)


def test_generate_on_a_half_written_checkpoint_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from glassformer.registry import build
    from glassformer.tokenizers import CharTokenizer

    folder = tmp_path / "ckpt"
    build("shakespeare-char-tiny").save(folder)
    CharTokenizer.from_text("abcdefgh ").save(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert main(["generate", str(folder), "--prompt", "ab"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors: incomplete or corrupt safetensors file" in err and "Traceback" not in err


def test_pickles_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(2), "evil": Unsafe()}, path)
    with pytest.raises(WeightsError, match="refused to load.*Nothing from it was executed"):
        read_torch_weights(path)


def test_folders_are_classified_once_with_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        read_config(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(WeightsError, match="line 1: malformed JSON"):
        read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"family": "gpt", "dim": 8}))
    assert read_config(tmp_path).kind == "glassformer" and read_config(tmp_path).fields() == {"dim": 8}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert read_config(tmp_path).kind == "huggingface"
    (tmp_path / "config.json").write_text(json.dumps({"hidden": 3}))
    with pytest.raises(WeightsError, match="names no glassformer family"):
        read_config(tmp_path)


class NamedSaver:
    """A tokenizer as write_hf_folder sees one: something with ``save`` (glassformer's)."""

    def save(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text("{}")


def test_hf_folders_are_written_whole_and_glassformer_ones_refused(tmp_path: Path) -> None:
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    with pytest.raises(TypeError, match="tokenizer of type object: no save method"):
        write_hf_folder(tmp_path / "bad", {"model_type": "toy"}, state, tokenizer=object())
    assert not (tmp_path / "bad").exists()  # refused before anything was written
    folder = write_hf_folder(tmp_path / "hf", {"model_type": "toy"}, state, tokenizer=NamedSaver())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert read_hf_folder(folder).data == {"model_type": "toy"}
    torch.testing.assert_close(read_safetensors(folder)["w"], state["w"])
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "config.json").write_text(json.dumps({"family": "gpt"}))
    with pytest.raises(ValueError, match="is a glassformer gpt folder, not a Hugging Face one; open it with"):
        read_hf_folder(tmp_path / "ours")
