"""Learning-rate schedules as pure functions of the step.

A schedule here is ``lr_at(step) -> float`` where ``step`` is the 0-based index of the optimizer
step about to be taken. Because the rate depends on the step alone, the schedule has no state to
save: a resumed run recomputes it and gets the same numbers bit for bit.

With ``lr`` the peak rate, ``W = warmup_steps``, ``D = decay_steps`` and
``floor = lr * min_lr_ratio``:

- warmup (every schedule, ``step < W``): ``lr * (step + 1) / W``. Counting from ``step + 1`` means
  the first step already moves the weights, and the peak is reached exactly at step ``W - 1``.
- ``constant``: ``lr``.
- ``cosine``: ``floor + (lr - floor) * (1 + cos(pi * p)) / 2`` with
  ``p = min(1, (step - W) / max(1, D - W))``; it stays at ``floor`` after step ``D``.
- ``linear``: ``floor + (lr - floor) * (1 - p)``, same ``p``.
- ``inverse_sqrt`` ("Attention is all you need", eq. 3):
  ``lr * min((step + 1) / W, sqrt(W / (step + 1)))``. The paper writes
  ``d_model**-0.5 * min(n**-0.5, n * W**-1.5)`` with ``n = step + 1``; that is this formula with
  ``lr = (d_model * W)**-0.5``, so setting that ``lr`` reproduces the paper's numbers exactly.

To drive a ``torch.optim.lr_scheduler.LambdaLR`` instead, pass ``lambda s: lr_at(s) / lr``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from glassformer.train.config import TrainConfig


def make_schedule(config: TrainConfig) -> Callable[[int], float]:
    """The learning rate at each step, as ``config`` describes it."""
    lr, warmup = config.lr, config.warmup_steps
    floor = lr * config.min_lr_ratio
    decay = config.total_decay_steps
    kind = config.schedule

    def lr_at(step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if kind == "inverse_sqrt":
            n = step + 1
            return lr * min(n / warmup, math.sqrt(warmup / n))
        if step < warmup:
            return lr * (step + 1) / warmup
        if kind == "constant":
            return lr
        progress = min(1.0, (step - warmup) / max(1, decay - warmup))
        if kind == "cosine":
            return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return floor + (lr - floor) * (1.0 - progress)
        raise ValueError(f"unknown schedule {kind!r}; expected constant, cosine, linear or inverse_sqrt")

    return lr_at
