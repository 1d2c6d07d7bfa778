"""An exponential moving average (EMA) of the weights.

After each optimizer step ``shadow = decay * shadow + (1 - decay) * weight``. The average of
recent weights is smoother than the last iterate; diffusion models sample from it, and it often
evaluates a little better for other models too. Buffers (e.g. running statistics) are copied, not
averaged. The shadow is kept in float32 whatever the weights' dtype, because ``1 - decay`` of
0.0001 vanishes in bf16 arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copies of ``model``'s floating-point parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {
            name: t.detach().float().clone() for name, t in model.state_dict().items() if t.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        averaged: list[Tensor] = []
        current: list[Tensor] = []
        for name, t in model.state_dict().items():
            if name not in self.shadow:
                continue
            if name in params and params[name].requires_grad:
                averaged.append(self.shadow[name])
                current.append(t.float())
            else:
                self.shadow[name].copy_(t)
        if averaged:
            # lerp: shadow + (1 - decay) * (weight - shadow), one fused kernel for all tensors
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.shadow):
            missing, extra = sorted(set(self.shadow) - set(state)), sorted(set(state) - set(self.shadow))
            raise ValueError(f"EMA state does not fit the model: missing {missing[:8]}, unexpected {extra[:8]}")
        for name, t in state.items():
            self.shadow[name].copy_(t)

    @contextmanager
    def applied_to(self, model: nn.Module) -> Iterator[None]:
        """Temporarily put the averaged weights into ``model`` (for evaluation or saving)."""
        live = {name: t.detach().clone() for name, t in model.state_dict().items() if name in self.shadow}
        own = model.state_dict()
        with torch.no_grad():
            for name, t in self.shadow.items():
                own[name].copy_(t)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, t in live.items():
                    own[name].copy_(t)
