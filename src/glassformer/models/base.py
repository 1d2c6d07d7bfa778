"""What every family's model shares: an output record and glassformer's own save/load format.

A saved model is a folder with ``config.json`` (the config dataclass plus ``"family"``) and
``model.safetensors``. Safetensors holds tensors only, so loading a model never runs code from the
file. The Hugging Face layout (``save_pretrained`` / ``from_pretrained``) lives in each family's
``hf.py``, because the key names are family-specific.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from torch import Tensor, nn

from glassformer.utils.config import ConfigMixin
from glassformer.utils.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    FolderConfig,
    load_into,
    read_config,
    read_safetensors,
    save_model_weights,
    write_json,
)

IGNORE_INDEX = -100  # a label or target with this value adds nothing to a loss (padding, prompt, unmasked)


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
        write_json({"family": self.family, **self.config.to_dict()}, directory / CONFIG_NAME)
        save_model_weights(self, directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], map_location: str = "cpu") -> Self:
        """Load a folder written by :meth:`save`; refuses a folder of another family."""
        return cls.from_folder(read_config(directory), map_location=map_location)

    @classmethod
    def from_folder(cls, folder: FolderConfig, map_location: str = "cpu") -> Self:
        """The model of a folder whose ``config.json`` has already been read (no second read)."""
        if folder.kind != "glassformer" or folder.family != cls.family:
            found = folder.family or f"Hugging Face {folder.model_type}"
            raise ValueError(
                f"{folder.folder} holds a {found} checkpoint, not a {cls.family} one; "
                "open it with glassformer.models.load_model, which picks the family"
            )
        config = cls.config_class.from_dict(folder.fields(), source=str(folder.folder / CONFIG_NAME))
        model = cls(config)
        weights = folder.folder / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: weights file not found")
        load_into(model, read_safetensors(weights, device=map_location), source=str(weights))
        return model
