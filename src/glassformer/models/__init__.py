"""Model families, each assembled from ``glassformer.nn``.

``load_model(folder)`` opens any glassformer model folder: it reads the ``family`` recorded in
``config.json`` and hands the folder to that family's class, so tools such as the attention
explainer work on every family without knowing them.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from torch import nn

# family name -> "module:Class"
FAMILIES: dict[str, str] = {
    "gpt": "glassformer.models.gpt.model:GPT",
    "bert": "glassformer.models.bert.model:Bert",
    "transformer": "glassformer.nn.transformer:Transformer",
}


def family_class(family: str) -> type[nn.Module]:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known families: {sorted(FAMILIES)}")
    module, cls = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module), cls)


def read_family(directory: str | os.PathLike[str]) -> str:
    """The family recorded in a model folder's ``config.json``."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json; is {directory} a glassformer model folder?")
    family = json.loads(path.read_text(encoding="utf-8")).get("family")
    if not family:
        raise ValueError(
            f"{path} names no glassformer family; if it is a Hugging Face folder, load it with the "
            "family's from_pretrained"
        )
    return family


def load_model(directory: str | os.PathLike[str], map_location: str = "cpu") -> nn.Module:
    """Load any glassformer model folder (``config.json`` with ``family`` + ``model.safetensors``)."""
    return family_class(read_family(directory)).load(directory, map_location=map_location)
