"""The GPT family: decoder-only language models (GPT-2, Llama-style, SmolLM2) in one class.

Importing this package registers the presets in ``glassformer.registry``, each with a ``-tiny``
twin. Checkpoints: ``glassformer.models.gpt.hf`` (Hugging Face layout), ``.gguf`` (SmolLM2 from
a GGUF file).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from glassformer.models.gpt import config as _cfg
from glassformer.models.gpt.config import GPTConfig
from glassformer.models.gpt.model import GPT, parameter_breakdown, parameter_report
from glassformer.registry import Preset, register
from glassformer.train.data import register_data

__all__ = ["GPT", "GPTConfig", "parameter_breakdown", "parameter_report"]


def example_batch(config: GPTConfig, batch_size: int = 2) -> dict[str, Any]:
    """Random token ids and their next-token targets, for smoke tests."""
    t = min(16, config.max_seq_len)
    ids = torch.randint(0, config.vocab_size, (batch_size, t + 1))
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


def _register(name: str, make: Callable[[], GPTConfig], description: str) -> None:
    register(Preset(name, "gpt", make, GPT, example_batch, description))
    register(Preset(f"{name}-tiny", "gpt", lambda: _cfg.tiny(make()), GPT, example_batch,
                    f"toy twin of {name} (2 layers, width 32) for tests"))  # fmt: skip


_register("gpt2", _cfg.gpt2, "GPT-2 small, 124M parameters")
_register("gpt2-medium", _cfg.gpt2_medium, "GPT-2 medium, 350M parameters")
_register("smollm2-135m", _cfg.smollm2_135m, "SmolLM2-135M: Llama architecture with grouped-query attention")
_register("shakespeare-char", _cfg.shakespeare_char, "nanoGPT's CPU config for character-level Tiny Shakespeare")
_register(
    "shakespeare-char-rope", _cfg.shakespeare_char_rope,
    "shakespeare-char with RoPE and a 2x FFN: lower loss and fewer FLOPs in nanoGPT's budget",
)  # fmt: skip
_register(
    "shakespeare-char-llama", _cfg.shakespeare_char_llama,
    "shakespeare-char's size with RoPE, RMSNorm, SwiGLU and no biases",
)  # fmt: skip
_register("pydoc-char", _cfg.pydoc_char, "character-level model for the embedded corpus (Python's help text)")

# `glassformer train <gpt preset>` reads token files prepared from text (glassformer.data); the
# default corpus is Tiny Shakespeare when the shared data has it, else Python's own help text.
register_data("gpt", "glassformer.data.prepare:causal_lm_data", default_preset="shakespeare-char")
register_data("pydoc-char", "glassformer.data.prepare:embedded_lm_data")
