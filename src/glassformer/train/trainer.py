"""The training loop: one ``Trainer`` for every family.

The trainer knows no task. It calls ``model(**batch)`` and reads ``.loss`` (a scalar) and,
optionally, ``.metrics`` (a dict of scalar tensors) from what comes back, e.g. a
``glassformer.models.base.ModelOutput``. Everything else (what a batch holds, what the loss
means) belongs to the family.

One optimizer step, in order:

1. set the learning rate of the step (``schedules.make_schedule``: a pure function of the step);
2. ``grad_accum_steps`` micro-batches: forward under autocast (``resolve_precision``), ``loss / k`` backward;
   under DDP the gradient all-reduce runs only on the last micro-batch (``no_sync``);
3. one small all-reduce carries the loss, a non-finite flag and a stop request, so every process
   agrees on stopping at the same step. A non-finite loss stops the run before the weights
   change (``NonFiniteLossError`` names the step and the last good checkpoint);
4. clip the global gradient norm, AdamW step (through the ``GradScaler`` for fp16), EMA update;
5. every ``log_interval`` steps a log record; every ``eval_interval`` steps an evaluation, which
   updates ``best/`` and the early-stopping count; every ``save_interval`` steps a checkpoint.

**Exact resume.** A checkpoint taken after step ``s`` holds everything the next step reads:
weights, optimizer and scaler state, the data position, and the RNG states of python, numpy,
torch and CUDA of every process. The learning rate is recomputed from ``s``, data batches are a
pure function of ``(seed, position)`` (``glassformer.train.data``), and evaluation runs inside
``torch.random.fork_rng`` so it never moves the training RNG. On the CPU, a run killed at any
moment and resumed gives bitwise the same weights as a run never interrupted (tested).

**Signals.** SIGINT (Ctrl-C) and SIGTERM (sent by schedulers and by ``torchrun`` on shutdown)
let the current step finish, save a checkpoint and return with ``stop_reason = "signal:…"``
and a message saying how to resume. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from glassformer.train import checkpoint as ckpt
from glassformer.train import distributed as ddp
from glassformer.train.config import TrainConfig
from glassformer.train.data import count_batch, eval_batches, train_stream
from glassformer.train.ema import EMA
from glassformer.train.optim import build_optimizer
from glassformer.train.report import RunReport, TrainSummary, plot_curves
from glassformer.train.schedules import make_schedule
from glassformer.utils.machine import Bf16Support, cpu_bf16

# TrainConfig fields a resumed run may change without leaving the path of the original run.
RESUME_FREE_FIELDS = frozenset({
    "out_dir", "max_steps", "device", "num_workers", "compile", "gradient_checkpointing", "eval_interval",
    "eval_batches", "early_stopping_patience", "early_stopping_min_delta", "save_interval", "keep_last",
    "log_interval", "progress", "tensorboard", "plot",
})


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the weights were not updated with it."""

    def __init__(self, message: str, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Call it before building a model for a
    reproducible initialization; ``Trainer.fit`` seeds again (``seed + rank``) before training."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (safe for ``weights_only`` loading)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_precision(requested: str, device: torch.device, cpu: Bf16Support | None = None) -> str:
    """The precision a run really uses; ``cpu`` is the CPU's bf16 support (detected when None).

    CUDA: ``auto`` is bf16 where the GPU supports it, else fp32. CPU: ``auto`` is bf16 only where
    the CPU computes bf16 natively (AMX or AVX-512 BF16), because elsewhere bf16 matmuls are
    emulated and far slower than fp32; an explicit ``bf16`` is honoured everywhere, with a warning
    where it will be slow. fp16 on a CPU, and bf16/fp16 on other devices, fall back to fp32.
    Autocast only: the weights, gradients and optimizer state stay fp32 in every case.
    """
    if device.type == "cuda":
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return requested
    if device.type == "cpu" and requested in ("auto", "bf16"):
        support = cpu if cpu is not None else cpu_bf16()
        if requested == "auto":
            return "bf16" if support.native else "fp32"
        if not support.native:  # a warning per fit; Python's default filter shows it once per process
            warnings.warn(
                f"precision=bf16 on a CPU without native bf16 ({support.reason}): bf16 matmuls are emulated "
                "there and can run hundreds of times slower than fp32. Use precision=fp32 (or auto) here.",
                stacklevel=3,
            )
        return "bf16"
    if requested in ("bf16", "fp16"):
        warnings.warn(
            f"precision={requested} on {device.type}: training in fp32 instead. fp16 autocast is used only on "
            "CUDA and bf16 autocast on CUDA and CPUs (fast on CPUs with AMX or AVX-512 BF16).",
            stacklevel=3,
        )
    return "fp32"


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"model_config must be a dataclass, a ConfigMixin or a dict, got {type(config).__name__}")


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _loss_and_metrics(out: Any, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
    if isinstance(out, Mapping):
        loss, metrics = out.get("loss"), out.get("metrics")
    else:
        loss, metrics = getattr(out, "loss", None), getattr(out, "metrics", None)
    if loss is None:
        raise ValueError(
            f"the model returned no loss; its forward must compute one from the batch (batch keys: {sorted(batch)}), "
            "e.g. by passing labels"
        )
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"the model's loss must be a scalar tensor, got {shape}; reduce it with .mean()")
    return loss, dict(metrics or {})


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked after each step; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Trainer:
    """Train ``model`` on ``train_data`` as ``config`` says; ``fit()`` runs it.

    ``train_data`` / ``eval_data``: a map-style data set, a callable
    ``get_batch(split, step, generator)`` or an iterable of batches (``glassformer.train.data``).
    A batch is a dict of keyword arguments for ``model(**batch)``. ``model_config`` (default:
    ``model.config``) is stored with each checkpoint and compared on resume. ``collate_fn`` merges
    samples of a map-style data set; without one, a data set's own ``collate`` method is used when
    it has one (data sets that augment whole batches carry theirs). ``resume_hint`` is the command printed after a signal stop.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_data: Any,
        eval_data: Any = None,
        model_config: Any = None,
        *,
        collate_fn: Any = None,
        resume_hint: str | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.train_data = train_data
        self.eval_data = eval_data
        self.model_config = model_config if model_config is not None else getattr(model, "config", None)
        self.collate_fn = collate_fn if collate_fn is not None else getattr(train_data, "collate", None)
        self.resume_hint = resume_hint or "call Trainer(...).fit(resume=True) with the same arguments"

    # ------------------------------------------------------------------------------------------
    def fit(self, resume: bool | str | os.PathLike[str] = False) -> TrainSummary:
        """Train until ``max_steps``, early stopping or a signal; return the summary.

        ``resume=True`` continues from the newest complete checkpoint in ``out_dir`` (or starts
        fresh when there is none yet); a path resumes from that checkpoint folder.
        """
        info, device = ddp.setup(self.config.device)
        stop = _StopRequest()
        previous_deterministic = torch.are_deterministic_algorithms_enabled()
        try:
            stop.install()
            return self._fit(info, device, resume, stop)
        finally:
            stop.restore()
            torch.use_deterministic_algorithms(previous_deterministic)
            ddp.teardown(info)

    # ------------------------------------------------------------------------------------------
    def _fit(self, info: ddp.DistInfo, device: torch.device, resume: Any, stop: _StopRequest) -> TrainSummary:
        cfg = self.config
        out_dir = Path(cfg.out_dir)
        ckpt_root = out_dir / "checkpoints"
        precision = resolve_precision(cfg.precision, device)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False

        model = self.model.to(device)
        if cfg.gradient_checkpointing:
            self._enable_checkpointing(model)
        model_cfg = _config_dict(self.model_config)
        family = getattr(model, "family", None) or None
        optimizer = build_optimizer(model, cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        stream = train_stream(self.train_data, cfg, info.rank, info.world_size, collate_fn=self.collate_fn,
                              pin_memory=device.type == "cuda")

        if info.is_main:
            ckpt.remove_temporaries(ckpt_root)
            ckpt.remove_temporaries(out_dir)
        ddp.barrier(info)

        # --- resume ---
        state: dict[str, Any] = {"step": 0, "best_value": None, "best_step": None, "bad_evals": 0, "seen": 0,
                                 "elapsed_s": 0.0}
        resume_from = self._resume_folder(resume, ckpt_root)
        saved: dict[str, Any] | None = None
        if resume_from is not None:
            saved = self._load(resume_from, model, model_cfg, family, optimizer, scaler, ema, stream, device)
            for key in state:
                state[key] = saved[key]

        # --- wrap for speed and for several processes ---
        run_model: nn.Module = torch.compile(model) if cfg.compile else model
        eval_model = run_model
        if info.enabled:
            run_model = torch.nn.parallel.DistributedDataParallel(
                run_model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused_parameters,
            )

        # --- the RNG last, right before the loop, in the same place for fresh and resumed runs ---
        if saved is not None and len(saved["rng"]) == info.world_size:
            restore_rng(saved["rng"][info.rank])
        else:
            if saved is not None:
                warnings.warn(
                    f"the checkpoint holds RNG states of {len(saved['rng'])} processes, this run has "
                    f"{info.world_size}: random draws (dropout) after the resume differ from an uninterrupted run",
                    stacklevel=3,
                )
            seed_everything(cfg.seed + info.rank + 1_000_003 * state["step"])

        report = RunReport(out_dir, enabled=info.is_main, progress=cfg.progress, tensorboard=cfg.tensorboard,
                           start_step=state["step"], max_steps=cfg.max_steps)
        if info.is_main and resume_from is not None:
            report.say(f"resumed from {resume_from} (step {state['step']})")
        loop = _Loop(self, info, device, precision, model, run_model, eval_model, optimizer, scaler, ema, stream,
                     report, state, model_cfg, family, ckpt_root, stop)
        try:
            return loop.run(last_saved=state["step"] if resume_from is not None else None)
        finally:
            report.close()

    def _resume_folder(self, resume: Any, ckpt_root: Path) -> Path | None:
        if resume is False or resume is None:
            earlier = ckpt.latest_checkpoint(ckpt_root)
            if earlier is not None:  # a fresh run would mix its checkpoints with the old run's
                raise ckpt.CheckpointError(
                    f"{ckpt_root} already holds checkpoints of an earlier run (newest: {earlier.name}); continue "
                    f"it with resume=True (--resume), or start over in another out_dir or after deleting "
                    f"{ckpt_root.parent}"
                )
            return None
        if resume is True:
            found = ckpt.latest_checkpoint(ckpt_root)
            if found is None:
                warnings.warn(f"resume requested but {ckpt_root} holds no complete checkpoint yet; starting at step 0",
                              stacklevel=4)
            return found
        folder = Path(resume)
        if not ckpt.is_complete(folder):
            raise ckpt.CheckpointError(f"{folder}: not a complete checkpoint (meta.json missing or files truncated)")
        return folder

    def _load(self, folder: Path, model: nn.Module, model_cfg: dict[str, Any], family: str | None,
              optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, ema: EMA | None, stream: Any,
              device: torch.device) -> dict[str, Any]:
        saved_cfg = ckpt.read_model_config(folder)
        saved_family = saved_cfg.pop("family", None)
        diffs = ckpt.config_differences(saved_cfg, model_cfg)
        if saved_family and family and saved_family != family:
            diffs.insert(0, f"family: checkpoint={saved_family!r}, now={family!r}")
        if diffs:
            raise ckpt.CheckpointError(
                f"cannot resume from {folder}: the model config differs from the checkpoint's in "
                f"{len(diffs)} field(s):\n  " + "\n  ".join(diffs)
                + "\nUse the checkpoint's model settings, or start a new run in another out_dir."
            )
        state = ckpt.load_train_state(folder)  # before anything is changed: refuses unsafe files
        ckpt.load_weights(model, folder, map_location=str(device))
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        ema_state = ckpt.load_ema(folder)
        if ema is not None:
            if ema_state is None:
                warnings.warn(f"{folder} has no EMA weights; the EMA restarts from the current weights", stacklevel=4)
            else:
                ema.load_state_dict(ema_state)
        stream.load_state_dict(state["data"])
        saved_train = json.loads((folder / "train_config.json").read_text(encoding="utf-8"))
        changed = [line for line in ckpt.config_differences(saved_train, self.config.to_dict())
                   if line.split(":", 1)[0] not in RESUME_FREE_FIELDS]
        if changed:
            warnings.warn("resuming with training settings that differ from the checkpoint's; the run will not "
                          "match an uninterrupted one:\n  " + "\n  ".join(changed), stacklevel=4)
        return state

    @staticmethod
    def _enable_checkpointing(model: nn.Module) -> None:
        flagged = [m for m in model.modules() if isinstance(getattr(m, "gradient_checkpointing", None), bool)]
        if not flagged:
            warnings.warn(
                f"gradient_checkpointing=true, but no submodule of {type(model).__name__} has a "
                "gradient_checkpointing attribute (e.g. glassformer.nn.blocks.TransformerStack); nothing changes",
                stacklevel=4,
            )
        for m in flagged:
            m.gradient_checkpointing = True


def fit(model: nn.Module, config: TrainConfig, train_data: Any, eval_data: Any = None, *,
        resume: bool | str | os.PathLike[str] = False, **kwargs: Any) -> TrainSummary:
    """``Trainer(model, config, train_data, eval_data, **kwargs).fit(resume)`` in one call."""
    return Trainer(model, config, train_data, eval_data, **kwargs).fit(resume)


class _Loop:
    """The state of one ``fit`` call and the loop over steps (kept apart from set-up for reading)."""

    def __init__(self, trainer: Trainer, info: ddp.DistInfo, device: torch.device, precision: str,
                 model: nn.Module, run_model: nn.Module, eval_model: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, ema: EMA | None, stream: Any, report: RunReport,
                 state: dict[str, Any], model_cfg: dict[str, Any], family: str | None, ckpt_root: Path,
                 stop: _StopRequest) -> None:
        self.t, self.cfg = trainer, trainer.config
        self.info, self.device, self.precision = info, device, precision
        self.model, self.run_model, self.eval_model = model, run_model, eval_model
        self.optimizer, self.scaler, self.ema, self.stream = optimizer, scaler, ema, stream
        self.report, self.state = report, state
        self.model_cfg, self.family, self.ckpt_root, self.stop = model_cfg, family, ckpt_root, stop
        self.lr_at = make_schedule(self.cfg)
        self.unit = "samples"
        self.last_loss: float | None = None
        self.last_eval: dict[str, float] = {}
        self.last_checkpoint: Path | None = ckpt.latest_checkpoint(ckpt_root) if info.is_main else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Matmuls in the resolved half precision, weights untouched (``resolve_precision`` chose a
        device that supports it); fp32 runs without autocast."""
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------
    def run(self, last_saved: int | None) -> TrainSummary:
        cfg, st = self.cfg, self.state
        k = cfg.grad_accum_steps
        self.model.train()
        session_start = time.perf_counter()
        session_seen = 0
        window = {"loss": 0.0, "steps": 0, "seen": 0, "t": time.perf_counter(), "metrics": {}}
        last_eval_step: int | None = None
        stop_reason = "max_steps"
        grad_norm: Tensor | None = None

        while st["step"] < cfg.max_steps:
            lr = self.lr_at(st["step"])
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            step_loss = torch.zeros((), device=self.device)
            step_metrics: dict[str, Tensor] = {}
            for micro in range(k):
                batch = next(self.stream)
                if not isinstance(batch, Mapping):
                    raise TypeError(f"a batch must be a dict of keyword arguments for model(**batch), got "
                                    f"{type(batch).__name__}")
                n, self.unit = count_batch(batch)
                batch = _to_device(batch, self.device)
                no_sync = self.info.enabled and micro < k - 1
                with self.run_model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
                    with self.autocast():
                        out = self.run_model(**batch)
                    loss, metrics = _loss_and_metrics(out, batch)
                    self.scaler.scale(loss / k).backward()
                step_loss += loss.detach().float() / k
                for name, value in metrics.items():
                    step_metrics[name] = step_metrics.get(name, 0.0) + value.detach().float() / k
                session_seen += n * self.info.world_size
                window["seen"] += n * self.info.world_size

            # one all-reduce: [loss, any non-finite, any stop request]; every process agrees
            flags = torch.stack([
                step_loss,
                (~torch.isfinite(step_loss)).float(),
                torch.tensor(float(self.stop.signum is not None), device=self.device),
            ])
            loss_sum, nonfinite, stop_votes = ddp.all_reduce_sum(flags, self.info).tolist()
            if nonfinite:
                self.optimizer.zero_grad(set_to_none=True)
                self._diverged(step_loss.item(), lr, session_start, session_seen)

            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update(self.model)
            st["step"] += 1
            step = st["step"]
            self.report.advance()

            window["loss"] += loss_sum / self.info.world_size
            window["steps"] += 1
            for name, value in step_metrics.items():
                window["metrics"][name] = window["metrics"].get(name, 0.0) + value
            if step % cfg.log_interval == 0 or step == cfg.max_steps:
                self._log(step, lr, window, grad_norm)

            if stop_votes:
                stop_reason = f"signal:{signal.Signals(self.stop.signum).name}" if self.stop.signum else "signal"
            elif self.t.eval_data is not None and cfg.eval_interval and step % cfg.eval_interval == 0:
                last_eval_step = step
                if self._evaluate(step):
                    stop_reason = "early_stopping"
            if stop_reason != "max_steps" or step % cfg.save_interval == 0 or step == cfg.max_steps:
                self._save(step, session_start, session_seen)
                last_saved = step
            if stop_reason != "max_steps":
                break

        step = st["step"]
        if self.t.eval_data is not None and last_eval_step != step and not stop_reason.startswith("signal"):
            self._evaluate(step)
        if last_saved != step:
            self._save(step, session_start, session_seen)
        if stop_reason.startswith("signal") and self.info.is_main:
            self.report.say(
                f"\nstopped by {stop_reason.split(':', 1)[1]} after step {step}; checkpoint saved to "
                f"{self.last_checkpoint}.\nResume with: {self.t.resume_hint}"
            )
        return self._finish(stop_reason, session_start, session_seen)

    # ------------------------------------------------------------------------------------------
    def _log(self, step: int, lr: float, window: dict[str, Any], grad_norm: Tensor | None) -> None:
        steps = max(1, window["steps"])
        values: dict[str, Any] = {"loss": window["loss"] / steps, "lr": lr}
        if grad_norm is not None:
            values["grad_norm"] = float(grad_norm)
        if window["metrics"]:
            names = sorted(window["metrics"])
            summed = ddp.all_reduce_sum(torch.stack([window["metrics"][n] for n in names]), self.info)
            for name, value in zip(names, (summed / (steps * self.info.world_size)).tolist()):
                values[name] = value
        now = time.perf_counter()
        values[f"{'tok' if self.unit == 'tok' else 'samples'}_per_s"] = window["seen"] / max(now - window["t"], 1e-9)
        values["step_s"] = (now - window["t"]) / steps  # wall seconds per optimizer step in this window
        epoch = self.stream.epoch_of(self.stream.position)
        if epoch is not None:
            values["epoch"] = round(epoch, 4)
        self.last_loss = values["loss"]
        self.report.record("train", step, values)
        window.update(loss=0.0, steps=0, seen=0, t=now, metrics={})

    @torch.no_grad()
    def _eval_pass(self, prefix: str) -> dict[str, float]:
        sums: dict[str, Tensor] = {}
        count = 0
        for batch in eval_batches(self.t.eval_data, self.cfg, self.info.rank, self.info.world_size,
                                  collate_fn=self.t.collate_fn):
            batch = _to_device(batch, self.device)
            with self.autocast():
                out = self.eval_model(**batch)
            loss, metrics = _loss_and_metrics(out, batch)
            for name, value in {"loss": loss, **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            count += 1
        names = sorted(sums)
        totals = ddp.all_reduce_sum(
            torch.stack([torch.tensor(float(count), device=self.device)] + [sums[n] for n in names]), self.info
        ).tolist()
        return {f"{prefix}{n}": v / totals[0] for n, v in zip(names, totals[1:])}

    def _evaluate(self, step: int) -> bool:
        """Evaluate (raw and EMA weights), update best/ and early stopping; True means stop."""
        cfg, st = self.cfg, self.state
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # evaluation must not move the training RNG
            self.model.eval()
            try:
                results = self._eval_pass("eval_")
                if self.ema is not None:
                    with self.ema.applied_to(self.model):
                        results.update(self._eval_pass("ema_eval_"))
            finally:
                self.model.train()
        self.last_eval = results
        self.report.record("eval", step, results)
        if cfg.best_metric not in results:
            raise ValueError(f"best_metric={cfg.best_metric!r} is not among the evaluation results {sorted(results)}")
        value = results[cfg.best_metric]
        best = st["best_value"]
        if best is None:
            improved = True
        elif cfg.best_mode == "min":
            improved = value < best - cfg.early_stopping_min_delta
        else:
            improved = value > best + cfg.early_stopping_min_delta
        if improved:
            st["best_value"], st["best_step"], st["bad_evals"] = value, step, 0
            if self.info.is_main:
                use_ema = self.ema is not None and cfg.best_metric.startswith("ema_")
                with self.ema.applied_to(self.model) if use_ema else contextlib.nullcontext():  # type: ignore[union-attr]
                    ckpt.save_best(Path(cfg.out_dir), model=self.model, model_config=self.model_cfg,
                                   family=self.family, metrics=results, step=step)
        else:
            st["bad_evals"] += 1
        if cfg.early_stopping_patience and st["bad_evals"] >= cfg.early_stopping_patience:
            self.report.say(f"early stopping at step {step}: {cfg.best_metric} has not improved for "
                            f"{st['bad_evals']} evaluations (best {st['best_value']:.4g} at step {st['best_step']})")
            return True
        return False

    def _save(self, step: int, session_start: float, session_seen: int) -> None:
        rng = ddp.gather_objects(capture_rng(), self.info)  # every process takes part
        if self.info.is_main:
            st = self.state
            train_state = {
                "step": step,
                "data": self.stream.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "best_value": st["best_value"],
                "best_step": st["best_step"],
                "bad_evals": st["bad_evals"],
                "seen": st["seen"] + session_seen,
                "elapsed_s": st["elapsed_s"] + time.perf_counter() - session_start,
                "world_size": self.info.world_size,
            }
            self.last_checkpoint = ckpt.save_checkpoint(
                self.ckpt_root, step, model=self.model, model_config=self.model_cfg, family=self.family,
                train_config=self.cfg.to_dict(), train_state=train_state,
                ema_state=self.ema.state_dict() if self.ema is not None else None, keep_last=self.cfg.keep_last,
            )
        ddp.barrier(self.info)

    def _diverged(self, loss: float, lr: float, session_start: float, session_seen: int) -> None:
        step = self.state["step"] + 1
        last = ckpt.latest_checkpoint(self.ckpt_root)
        where = (f"The last good checkpoint is {last}; resume from it with: {self.t.resume_hint}"
                 if last is not None else "No checkpoint was written before it.")
        advice = [f"a lower learning rate (lr={self.cfg.lr:g} now; try lr={self.cfg.lr / 3:.2g})"]
        if self.cfg.warmup_steps == 0:
            advice.append("a warmup (warmup_steps=100)")
        if self.cfg.grad_clip == 0:
            advice.append("gradient clipping (grad_clip=1.0)")
        if self.precision == "fp16":
            advice.append("precision=bf16 or fp32 (fp16 overflows easily)")
        message = (
            f"non-finite loss ({loss}) at step {step} (learning rate {lr:.3g}); training stopped and the weights "
            f"were not updated with it. {where}\nTry " + ", ".join(advice) + "."
        )
        self.report.say(message)
        self._finish("diverged", session_start, session_seen)
        raise NonFiniteLossError(message, step, last)

    def _finish(self, stop_reason: str, session_start: float, session_seen: int) -> TrainSummary:
        cfg, st = self.cfg, self.state
        elapsed = time.perf_counter() - session_start
        out_dir = Path(cfg.out_dir)
        best_dir = out_dir / "best"
        summary = TrainSummary(
            stop_reason=stop_reason, step=st["step"], max_steps=cfg.max_steps, final_loss=self.last_loss,
            best_metric=cfg.best_metric, best_value=st["best_value"], best_step=st["best_step"],
            last_eval=self.last_eval, seen=st["seen"] + session_seen, unit=self.unit,
            elapsed_s=st["elapsed_s"] + elapsed, throughput=session_seen / max(elapsed, 1e-9),
            parameters=sum(p.numel() for p in {id(p): p for p in self.model.parameters()}.values()),
            world_size=self.info.world_size, device=self.device.type, precision=self.precision,
            checkpoint=str(self.last_checkpoint) if self.last_checkpoint else None,
            best_dir=str(best_dir) if best_dir.is_dir() else None,
            log_path=str(self.report.log_path) if self.info.is_main else None,
        )
        if self.info.is_main:
            if cfg.plot:
                title = f"{self.family or type(self.model).__name__}: {out_dir.name}"
                curve = plot_curves(self.report.log_path, out_dir / "curves.png", title=title)
                summary.curve_path = str(curve) if curve else None
            self.report.close()
            (out_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n",
                                                  encoding="utf-8")
            print(summary.to_text(), flush=True)
        return summary

