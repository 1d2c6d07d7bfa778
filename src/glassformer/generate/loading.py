"""Open a checkpoint for generation: the model, its tokenizer and (if any) its chat template.

Three kinds of checkpoint are understood:

* a glassformer model folder (``config.json`` naming its ``family`` + ``model.safetensors``, with
  the tokenizer saved beside it);
* a Hugging Face GPT-2 or Llama folder (``config.json`` with ``model_type``);
* a GGUF file (Llama architecture, e.g. SmolLM2).

Generation needs a decoder-only language model, so a folder of another family (a BERT encoder,
say) is refused with a message that says so rather than failing inside the decoding loop.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

# Families whose models follow the decoder contract of glassformer.generate.decode.
DECODER_FAMILIES: tuple[str, ...] = ("gpt",)
HF_DECODER_TYPES: tuple[str, ...] = ("gpt2", "llama")


@dataclass
class Checkpoint:
    """A model ready to generate, the tokenizer that reads its ids, and how it expects a chat."""

    model: nn.Module
    tokenizer: Any
    chat_template: str | None  # a Jinja chat template, or None (a plain "role: text" transcript)
    name: str


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open ``path`` (a glassformer folder, a Hugging Face GPT-2/Llama folder or a .gguf file)."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        from glassformer.models.gpt.gguf import load_gguf

        model, tokenizer, template = load_gguf(path)
        return Checkpoint(model, tokenizer, template or None, path.name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint folder or .gguf file")
    if not path.is_dir():
        raise ValueError(f"{path}: not a model folder or a .gguf file")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no config.json; is {path} a model folder?")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}, line {err.lineno}: malformed JSON ({err.msg})") from None
    family = config.get("family")
    if family is not None:
        if family not in DECODER_FAMILIES:
            raise ValueError(
                f"{path} holds a {family!r} model; generation needs a decoder-only language model "
                f"(family {', '.join(DECODER_FAMILIES)})"
            )
        from glassformer.models import load_model

        model = load_model(path)
    else:
        model_type = config.get("model_type")
        if model_type not in HF_DECODER_TYPES:
            raise ValueError(
                f"{path} is a Hugging Face {model_type or 'unknown'!s} checkpoint; generation reads decoder-only "
                f"ones of type {', '.join(HF_DECODER_TYPES)}"
            )
        from glassformer.models.gpt.hf import from_pretrained

        model = from_pretrained(path)
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
