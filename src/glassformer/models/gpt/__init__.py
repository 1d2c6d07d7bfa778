"""The GPT family: decoder-only language models (GPT-2, Llama-style, SmolLM2, Gemma 3) in one class.

``FAMILY`` declares the presets (each with a ``-tiny`` twin), the training data, the checkpoint
formats (``hf.py``: the Hugging Face layout; ``gguf.py``: SmolLM2 and Gemma 3 from GGUF files) and that the
family generates as a decoder.
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.models.gpt import config as _cfg
from glassformer.models.gpt.config import GPTConfig
from glassformer.models.gpt.model import GPT, parameter_breakdown, parameter_report
from glassformer.registry import Family, Format

__all__ = ["FAMILY", "GPT", "GPTConfig", "parameter_breakdown", "parameter_report"]


def example_batch(config: GPTConfig, batch_size: int = 2) -> dict[str, Any]:
    """Random token ids and their next-token targets, for smoke tests."""
    t = min(16, config.max_seq_len)
    ids = torch.randint(0, config.vocab_size, (batch_size, t + 1))
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


PRESETS = {
    "gpt2": (_cfg.gpt2, "GPT-2 small, 124M parameters"),
    "gpt2-medium": (_cfg.gpt2_medium, "GPT-2 medium, 350M parameters"),
    "smollm2-135m": (_cfg.smollm2_135m, "SmolLM2-135M: Llama architecture with grouped-query attention"),
    "gemma3-270m": (
        _cfg.gemma3_270m, "Gemma 3 270M: QK-norm, 4 norms per block, 5 sliding-window layers to 1 global",
    ),
    "shakespeare-char": (_cfg.shakespeare_char, "nanoGPT's CPU config for character-level Tiny Shakespeare"),
    "shakespeare-char-rope": (
        _cfg.shakespeare_char_rope,
        "shakespeare-char with RoPE and a 2x FFN: lower loss and fewer FLOPs in nanoGPT's budget",
    ),
    "shakespeare-char-llama": (
        _cfg.shakespeare_char_llama, "shakespeare-char's size with RoPE, RMSNorm, SwiGLU and no biases",
    ),
    "pydoc-char": (_cfg.pydoc_char, "character-level model for the embedded corpus (Python's help text)"),
}

FAMILY = Family(
    name="gpt",
    model=GPT,
    config=GPTConfig,
    presets=PRESETS,
    tiny=_cfg.tiny,
    example_batch=example_batch,
    # `glassformer train <gpt preset>` reads token files prepared from text (glassformer.data); the
    # default corpus is Tiny Shakespeare when the shared data has it, else Python's own help text.
    data={"gpt": "glassformer.data.prepare:causal_lm_data", "pydoc-char": "glassformer.data.prepare:embedded_lm_data"},
    default_preset="shakespeare-char",
    formats=(
        Format("huggingface", load="glassformer.models.gpt.hf:from_pretrained",
               save="glassformer.models.gpt.hf:save_pretrained", exports="glassformer.models.gpt.hf:architecture",
               model_types=("gpt2", "gpt_neox", "llama", "gemma3_text")),
        Format("gguf", load="glassformer.models.gpt.gguf:load_gguf_model", bundle="glassformer.models.gpt.gguf:load_gguf",
               suffixes=(".gguf",)),
    ),
    generation="decoder",
    chat_model="glassformer.models.gpt.gguf:default_chat_model",
)
