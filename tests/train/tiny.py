"""A tiny transformer language model and synthetic data for the training-engine tests.

Shared by the in-process tests and by ``train_script.py``, which the kill/resume and torchrun
tests start as subprocesses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import ModelBase, ModelOutput
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.positional import LearnedPositionalEmbedding
from glassformer.utils.config import ConfigMixin


@dataclass
class TinyConfig(ConfigMixin):
    vocab_size: int = 16
    dim: int = 16
    n_layers: int = 2
    n_heads: int = 2
    max_len: int = 8
    dropout: float = 0.1


class TinyLM(ModelBase):
    """Embeddings + a glassformer TransformerStack + a tied output head; dropout exercises the RNG.

    No biases: a key projection's bias has an exactly-zero true gradient (softmax ignores a shift
    shared by all keys), so AdamW would turn rounding noise into full-size updates, and runs that
    should agree to 1e-6 (DDP vs one process, accumulation vs one big batch) would not.
    """

    family = "tiny-test"
    config_class = TinyConfig

    def __init__(self, config: TinyConfig) -> None:
        super().__init__(config)
        self.tok = nn.Embedding(config.vocab_size, config.dim)
        self.pos = LearnedPositionalEmbedding(config.max_len, config.dim)
        self.stack = TransformerStack(config.n_layers, config.dim, config.n_heads, dropout=config.dropout,
                                      bias=False, backend="eager")
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # tied, as GPT-2 does
        nn.init.normal_(self.tok.weight, std=0.02)

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> ModelOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tok(input_ids) + self.pos(positions)  # (B, T, C)
        logits = self.head(self.stack(x, is_causal=True).hidden)  # (B, T, V)
        if labels is None:
            return ModelOutput(logits=logits)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return ModelOutput(loss=loss, logits=logits, metrics={"accuracy": accuracy})


def make_dataset(n: int = 96, seq_len: int = 8, vocab: int = 16, seed: int = 0) -> list[dict[str, Tensor]]:
    """Sequences counting up modulo ``vocab`` from a random start: learnable, so the loss falls."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, vocab, (n, 1), generator=g)
    seqs = (starts + torch.arange(seq_len + 1)) % vocab
    return [{"input_ids": s[:-1].clone(), "labels": s[1:].clone()} for s in seqs]


def build(dropout: float = 0.1, seed: int = 0, **overrides: int) -> TinyLM:
    torch.manual_seed(seed)
    return TinyLM(TinyConfig(dropout=dropout, **overrides))
