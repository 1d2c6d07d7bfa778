"""What every family's model shares: an output record and glassformer's own save/load format.

A saved model is a folder with ``config.json`` (the config dataclass plus ``"family"``) and
``model.safetensors``. Safetensors holds tensors only, so loading a model never runs code from the
file. The Hugging Face layout (``save_pretrained`` / ``from_pretrained``) lives in each family's
``hf.py``, because the key names are family-specific.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from glassformer.utils.config import ConfigMixin, write_text_atomic


@dataclass
class ModelOutput:
    """What a model's forward returns. ``loss`` is set when targets were given."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    hidden_states: Tensor | None = None
    attentions: list[Tensor] | None = None  # one (B, H, Tq, Tk) per layer (bertviz layout)
    cross_attentions: list[Tensor] | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    cache: Any = None


class ModelBase(nn.Module):
    """Base class: ``config`` attribute, parameter counting, and the glassformer folder format."""

    family: ClassVar[str] = ""
    config_class: ClassVar[type[ConfigMixin]]

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; tied weights are counted once."""
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        data = {"family": self.family, **self.config.to_dict()}
        write_text_atomic(directory / "config.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
        save_state_dict(self, directory / "model.safetensors")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], map_location: str = "cpu") -> Self:
        """Load a folder written by :meth:`save`; refuses a folder of another family."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: no config.json; is {directory} a glassformer model folder?")
        data = json.loads(config_path.read_text(encoding="utf-8"))
        family = data.pop("family", None)
        if family != cls.family:
            raise ValueError(
                f"{directory} holds a {family or 'unknown'} checkpoint, not a {cls.family} one; "
                f"load it with the {family} family instead"
            )
        config = cls.config_class.from_dict(data, source=str(config_path))
        model = cls(config)
        load_state_dict_file(model, directory / "model.safetensors", map_location)
        return model


def save_state_dict(model: nn.Module, path: Path) -> None:
    """Save weights as safetensors, atomically; tied tensors are stored once."""
    state = {}
    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().contiguous().cpu()
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)


def load_state_dict_file(model: nn.Module, path: Path, map_location: str = "cpu") -> None:
    """Load safetensors weights into ``model``; tied tensors may be absent from the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    state = load_file(str(path), device=map_location)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    # a missing key is fine only when it shares storage with a key that is present (tied weights)
    present_ptrs = {expected[k].data_ptr() for k in state if k in expected}
    missing = [k for k in missing if expected[k].data_ptr() not in present_ptrs]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model; missing {missing[:8]}, unexpected {unexpected[:8]}")
    for k, v in state.items():
        if expected[k].shape != v.shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(expected[k].shape)}")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
