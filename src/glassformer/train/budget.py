"""Training to a wall-clock budget: how many optimizer steps fit in N minutes on this machine.

A benchmark that compares models "at the same budget" must set ``max_steps`` before the run
starts, because the learning-rate schedule (warmup, cosine decay) is laid out over ``max_steps``.
:func:`seconds_per_step` times a short run of the engine itself on a throwaway copy of the model,
so the measured step pays what the real run pays (data loading, augmentation, clipping, logging),
and :func:`steps_for_minutes` turns a budget into a step count.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from glassformer.train.config import TrainConfig
from glassformer.train.trainer import Trainer


def seconds_per_step(model: nn.Module, data: Any, batch_size: int, work_dir: str | os.PathLike[str],
                     steps: int = 20, **overrides: Any) -> float:  # fmt: skip
    """Seconds per optimizer step over the second half of a ``steps``-step engine run (warmed up).

    ``overrides``: further ``TrainConfig`` fields the real run uses (``grad_accum_steps``, ``ema_decay``,
    ``precision``), since they change the cost of a step. Writes only under ``work_dir/calibrate``, which it clears first."""
    if steps < 4:
        raise ValueError(f"steps={steps}: time at least 4 steps (the first half is warm-up)")
    out = Path(work_dir) / "calibrate"
    shutil.rmtree(out, ignore_errors=True)  # a throwaway run: an earlier one must not be resumed
    fields = dict(out_dir=str(out), max_steps=steps, batch_size=batch_size, eval_interval=0, eval_batches=1,
                  log_interval=steps // 2, save_interval=steps, keep_last=1, plot=False, progress=False,
                  precision="fp32")  # fmt: skip
    fields.update(overrides)
    Trainer(copy.deepcopy(model), TrainConfig(**fields), data, None).fit()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    times = [r["step_s"] for r in records if r.get("kind") == "train" and "step_s" in r]
    if not times:
        raise RuntimeError(f"{out / 'log.jsonl'}: the calibration run logged no step times")
    return times[-1]


def steps_for_minutes(minutes: float, per_step: float, reserve: float = 0.0, at_least: int = 20) -> int:
    """Optimizer steps that fill ``minutes`` at ``per_step`` seconds each, after ``reserve`` seconds
    (evaluations, checkpoints) and a 3% margin for what the timing missed."""
    if minutes <= 0 or per_step <= 0:
        raise ValueError(f"need a positive budget and step time, got minutes={minutes}, per_step={per_step}")
    return max(at_least, int((minutes * 60 * 0.97 - reserve) / per_step))
