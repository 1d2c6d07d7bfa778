"""Position-wise feed-forward networks: plain (ReLU, GELU, quick GELU) and gated (SwiGLU, GeGLU)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Activation = Literal["relu", "gelu", "gelu_tanh", "quick_gelu", "silu", "swiglu", "geglu", "geglu_tanh"]
GATED: dict[str, str] = {"swiglu": "silu", "geglu": "gelu", "geglu_tanh": "gelu_tanh"}  # geglu_tanh: Gemma


def activation_fn(name: str) -> nn.Module:
    """The element-wise non-linearity behind an FFN kind."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()  # exact, erf-based (BERT)
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
    if name == "quick_gelu":
        return QuickGELU()  # OpenAI CLIP's
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; expected relu, gelu, gelu_tanh, quick_gelu or silu")


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU that OpenAI's CLIP was trained with,
    so its checkpoints need exactly this curve, not the exact GELU."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class FeedForward(nn.Module):
    """``down(act(up(x)))``, or for gated kinds ``down(act(gate(x)) * up(x))`` (Shazeer 2020).

    Gated FFNs have three matrices instead of two; to keep the parameter count of a plain FFN with
    hidden size ``4*dim``, Llama-style configs pick ``hidden_dim ~ 8/3*dim``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        activation: Activation = "gelu",
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.gated = activation in GATED
        self.up = nn.Linear(dim, hidden_dim, bias=bias)
        self.gate = nn.Linear(dim, hidden_dim, bias=bias) if self.gated else None
        self.act = activation_fn(GATED.get(activation, activation))
        self.down = nn.Linear(hidden_dim, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        if self.gate is not None:
            h = self.act(self.gate(x)) * self.up(x)  # (B, T, hidden)
        else:
            h = self.act(self.up(x))  # (B, T, hidden)
        return self.dropout(self.down(h))

