"""``TrainConfig``: every knob of a training run, as one dataclass.

It loads from YAML (``TrainConfig.from_yaml(path, overrides)``) and takes command-line
``key=value`` overrides; an unknown key is an error that lists the valid ones (see
``glassformer.utils.config``). Each field is checked here, so a bad value fails before any model
is built, with a message naming the field.

Batch sizes are counted per process and per micro-step, as in nanoGPT: one optimizer step sees
``batch_size * grad_accum_steps * world_size`` samples. Keeping that product fixed keeps the run
the same whether it is spread over micro-steps or over processes (the tests check both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.utils.config import ConfigError, ConfigMixin

Precision = Literal["auto", "fp32", "bf16", "fp16"]
ScheduleName = Literal["constant", "cosine", "linear", "inverse_sqrt"]


@dataclass
class TrainConfig(ConfigMixin):
    """Settings of one training run. Defaults suit a small model on one machine."""

    # --- the run ---
    out_dir: str = "out/run"  # checkpoints/, best/, log.jsonl, curves.png, summary.json
    seed: int = 1337  # seeds python, numpy and torch at the start of a fresh run (plus the rank)
    deterministic: bool = False  # torch.use_deterministic_algorithms; slower on CUDA
    device: str = "auto"  # auto = cuda when available, else cpu; or "cpu", "cuda", "cuda:1", "mps"
    # Autocast only (weights stay fp32). auto = bf16 on a CUDA device that supports it and on a CPU with
    # native bf16 (AMX / AVX-512 BF16; GLASSFORMER_CPU_BF16=0|1 overrides the detection), else fp32;
    # bf16 = bf16 on CUDA and any CPU (warns where the CPU emulates it); fp16 = CUDA only, else fp32
    precision: Precision = "auto"
    compile: bool = False  # torch.compile the model (pays a compile time once)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower

    # --- steps and batches ---
    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # samples per process per micro-step
    grad_accum_steps: int = 1  # micro-steps per optimizer step
    num_workers: int = 0  # DataLoader worker processes for map-style data sets

    # --- optimizer (AdamW) ---
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.1  # applied to matrices only (see optim.param_groups)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off

    # --- learning-rate schedule (formulas in schedules.py) ---
    schedule: ScheduleName = "cosine"
    warmup_steps: int = 0
    decay_steps: int | None = None  # cosine/linear reach the floor here; None = max_steps
    min_lr_ratio: float = 0.1  # the floor of cosine/linear, as a fraction of lr

    # --- exponential moving average of the weights ---
    ema_decay: float = 0.0  # 0 = off; 0.999-0.9999 for diffusion models

    # --- evaluation, best checkpoint, early stopping ---
    eval_interval: int = 200  # steps between evaluations (and one at the end); 0 = only at the end
    eval_batches: int = 20  # batches per process per evaluation; 0 = the whole eval set
    best_metric: str = "eval_loss"  # any logged eval key, e.g. eval_accuracy
    best_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int = 0  # stop after this many evaluations without improvement; 0 = off
    early_stopping_min_delta: float = 0.0  # an improvement must beat the best by more than this

    # --- checkpoints ---
    save_interval: int = 500  # steps between checkpoints (and one at the end)
    keep_last: int = 3  # older checkpoints are deleted; best/ is kept apart

    # --- what a person sees ---
    log_interval: int = 10  # steps between log records (JSONL, progress bar, TensorBoard)
    progress: bool = True  # tqdm progress bar on rank 0
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)
    plot: bool = True  # draw curves.png (loss and learning rate) at the end

    # --- distributed ---
    ddp_find_unused_parameters: bool = False  # set for models whose forward skips parameters

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "grad_accum_steps", "log_interval", "save_interval", "keep_last")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r}: must be a positive integer")
        non_negative = ("num_workers", "warmup_steps", "eval_interval", "eval_batches", "early_stopping_patience")
        for name in non_negative:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value!r}: must be an integer >= 0")
        if self.decay_steps is not None and self.decay_steps <= 0:
            raise ConfigError(f"decay_steps={self.decay_steps!r}: must be positive or None")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr!r}: must be positive")
        for name in ("weight_decay", "grad_clip", "early_stopping_min_delta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio!r}: must lie in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay={self.ema_decay!r}: must lie in [0, 1) (0 turns EMA off)")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas={self.betas!r}: expected two numbers in [0, 1)")
        if self.schedule == "inverse_sqrt" and self.warmup_steps == 0:
            raise ConfigError("schedule='inverse_sqrt' needs warmup_steps > 0 (the peak sits at the end of warmup)")
        choices = {
            "precision": ("auto", "fp32", "bf16", "fp16"),
            "schedule": ("constant", "cosine", "linear", "inverse_sqrt"),
            "best_mode": ("min", "max"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be one of {list(allowed)}")
        if not self.best_metric.startswith(("eval_", "ema_eval_")):
            raise ConfigError(
                f"best_metric={self.best_metric!r}: must name an evaluation key such as 'eval_loss' or "
                "'eval_accuracy' (training metrics are too noisy to pick a best checkpoint)"
            )

    @property
    def total_decay_steps(self) -> int:
        """The step at which cosine/linear schedules reach their floor."""
        return self.decay_steps if self.decay_steps is not None else self.max_steps
