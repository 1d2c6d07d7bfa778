"""Open a checkpoint for generation: the model, its tokenizer and (if any) its chat template.

What can be opened comes from the families' records (``glassformer.registry``): a glassformer model
folder of a family that generates (``Family.generation``), a Hugging Face folder whose
``model_type`` such a family reads, or a file in a format a family reads by suffix (GGUF). A
folder of a family that does not generate (a BERT encoder, say) is refused with a message that
says so rather than failing inside the decoding loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from glassformer import registry
from glassformer.utils.weights import read_config


@dataclass
class Checkpoint:
    """A model ready to generate, the tokenizer that reads its ids, and how it expects a chat."""

    model: nn.Module
    tokenizer: Any
    chat_template: str | None  # a Jinja chat template, or None (a plain "role: text" transcript)
    name: str


def generating_families() -> dict[str, registry.Family]:
    return {name: f for name, f in registry.families().items() if f.generation is not None}


def _hf_types() -> list[str]:
    return sorted({t for f in generating_families().values() for fmt in f.formats for t in fmt.model_types})


def _open_file(path: Path) -> Checkpoint:
    try:
        record, fmt = registry.format_for(suffix=path.suffix)
    except ValueError:
        raise ValueError(f"{path}: not a model folder or a file format a family reads") from None
    if fmt.bundle is not None:
        model, tokenizer, template = registry.import_path(fmt.bundle)(path)
        return Checkpoint(model.eval(), tokenizer, template or None, path.name)
    model = registry.import_path(fmt.load)(path)
    return Checkpoint(model.eval(), _tokenizer(path.parent), _chat_template(path.parent), path.name)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open ``path``: a model folder (glassformer's or Hugging Face's) or a file such as a .gguf."""
    from glassformer.models import open_folder

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder or model file")
    if path.is_file():
        return _open_file(path)
    config = read_config(path)
    names = ", ".join(generating_families())
    if config.kind == "glassformer":
        record = registry.family(str(config.family))
        if record.generation is None:
            raise ValueError(
                f"{path} holds a {record.name!r} model; generation needs a decoder-only or encoder-decoder "
                f"model (families {names})"
            )
    elif config.model_type not in _hf_types():
        raise ValueError(
            f"{path} is a Hugging Face {config.model_type or 'unknown'!s} checkpoint; generation reads "
            f"decoder-only and encoder-decoder ones of type {', '.join(_hf_types())}"
        )
    model = open_folder(config)
    return Checkpoint(model.eval(), _tokenizer(path), _chat_template(path), path.name)


def _tokenizer(folder: Path) -> Any:
    """The tokenizer beside the weights, else the training run's (``glassformer train`` saves it
    in ``out_dir``, so ``out_dir/best`` and ``out_dir/checkpoints/step-N`` find it two levels up)."""
    from glassformer.tokenizers import load_tokenizer

    for candidate in (folder, folder.parent, folder.parent.parent):
        try:
            return load_tokenizer(candidate)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(
        f"{folder}: the model has no tokenizer beside it (tokenizer.json, vocab.json + merges.txt, ...); "
        "save one into the folder with tokenizer.save(folder)"
    )


def _chat_template(folder: Path) -> str | None:
    """The ``chat_template`` of ``tokenizer_config.json`` or ``chat_template.jinja``, if present."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") or None
    tok_config = folder / "tokenizer_config.json"
    if tok_config.is_file():
        try:
            template = json.loads(tok_config.read_text(encoding="utf-8")).get("chat_template")
        except json.JSONDecodeError:
            return None
        if isinstance(template, str) and template:
            return template
    return None
