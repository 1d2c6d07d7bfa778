"""Small decoders and a character tokenizer shared by the generation tests."""

from __future__ import annotations

import pytest
import torch

from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import LLAMA_STYLE, GPTConfig
from glassformer.tokenizers import CharTokenizer

TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?\n0123"  # 63 characters
VARIANTS = {
    "gpt2": {},
    "llama": dict(n_kv_heads=2, **LLAMA_STYLE),  # RoPE, RMSNorm, SwiGLU, grouped-query attention
}


def tiny_gpt(variant: str = "gpt2", vocab_size: int = 64, max_seq_len: int = 48, seed: int = 0) -> GPT:
    """A 2-layer decoder with weights large enough (std 0.3) that greedy output does not just repeat."""
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=vocab_size, max_seq_len=max_seq_len, n_layers=2, n_heads=4, dim=32, init_std=0.3,
        **VARIANTS[variant],
    )  # fmt: skip
    return GPT(config).eval()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def model(request) -> GPT:
    return tiny_gpt(request.param)


@pytest.fixture(scope="module")
def gpt2_model() -> GPT:
    return tiny_gpt("gpt2")


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    """Characters of TEXT plus an end-of-text token, so ids fit a 64-token model."""
    return CharTokenizer.from_text(TEXT, special_tokens=["<eos>"], roles={"eos": "<eos>"})


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of lengths 5, 2 and 4, left-padded with id 0."""
    rows = [[3, 14, 15, 9, 26], [5, 35], [8, 9, 7, 9]]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask
