"""What a person sees of a run: progress (a bar on a terminal, plain lines in a log), JSONL log,
TensorBoard, curve picture, summary.

Only rank 0 reports. ``log.jsonl`` gets one JSON object per logged step
(``{"kind": "train", "step", "loss", "lr", "grad_norm", "tok_per_s" or "samples_per_s", "step_s", ...}``)
and one per evaluation (``{"kind": "eval", "step", "eval_loss", ...}``); it is the source of the
picture and easy to load with pandas. When a run resumes, records after the checkpoint's step
(written by the run that was killed) are dropped, so the log reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from glassformer.utils.config import write_text_atomic
from glassformer.utils.progress import Progress, si, write


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL log; a torn last line (process killed mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class RunReport:
    """Progress bar + JSONL + optional TensorBoard for rank 0; does nothing on other ranks."""

    def __init__(self, out_dir: Path, *, enabled: bool, progress: bool, tensorboard: bool,
                 start_step: int, max_steps: int) -> None:
        self.enabled = enabled
        self.log_path = out_dir / "log.jsonl"
        self._bar: Progress | None = None
        self._tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_log(self.log_path) if r.get("step", 0) <= start_step]
        write_text_atomic(self.log_path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = self.log_path.open("a", encoding="utf-8")
        if progress:
            self._bar = Progress(max_steps, initial=start_step, desc="train", unit="step")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard=true but the tensorboard package is not installed; "
                              "pip install tensorboard, or rely on log.jsonl", stacklevel=2)
            else:
                self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"), purge_step=start_step + 1)

    def record(self, kind: str, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step, **values}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)
        if self._bar is not None and kind == "train":
            post = {"loss": f"{values['loss']:.4f}", "lr": f"{values['lr']:.2e}"}
            for unit in ("tok_per_s", "samples_per_s"):
                if unit in values:
                    post[unit.replace("_per_s", "/s")] = si(values[unit])
            self._bar.set_postfix(post)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def say(self, message: str) -> None:
        """Print a line without breaking the progress bar (rank 0 only)."""
        if self.enabled:
            write(message)

    def close(self) -> None:
        if not self.enabled or self._file.closed:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()


def plot_curves(log_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Draw training/eval loss and the learning rate against the step; None when nothing was logged."""
    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and "eval_loss" in r]
    if not train:
        return None
    # the Agg canvas directly: no global matplotlib backend is switched for the caller
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    if evals:
        ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss", ms=4)
    ema = [r for r in records if r.get("kind") == "eval" and "ema_eval_loss" in r]
    if ema:
        ax_loss.plot([r["step"] for r in ema], [r["ema_eval_loss"] for r in ema], "s--", label="EMA eval loss", ms=3)
    finite = [r["loss"] for r in train if math.isfinite(r["loss"])]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    if title:
        ax_loss.set_title(title)
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:green")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    return png_path


@dataclass
class TrainSummary:
    """What ``Trainer.fit`` returns (and writes to ``summary.json``)."""

    stop_reason: str  # "max_steps", "early_stopping", "signal:SIGTERM", "signal:SIGINT", "diverged"
    step: int
    max_steps: int
    final_loss: float | None
    best_metric: str
    best_value: float | None
    best_step: int | None
    last_eval: dict[str, float] = field(default_factory=dict)
    seen: int = 0  # tokens or samples, summed over processes
    unit: str = "samples"
    elapsed_s: float = 0.0
    throughput: float = 0.0  # unit per second over this process's session
    parameters: int = 0
    world_size: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    checkpoint: str | None = None
    best_dir: str | None = None
    log_path: str | None = None
    curve_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """The one-screen summary printed at the end of a run."""
        minutes, seconds = divmod(self.elapsed_s, 60)
        lines = [
            f"glassformer train: {self.stop_reason} at step {self.step}/{self.max_steps}",
            f"  model        {self.parameters / 1e6:.2f}M parameters on {self.world_size} x {self.device} ({self.precision})",
            f"  time         {int(minutes)}m{seconds:04.1f}s, {si(self.throughput)} {self.unit}/s, "
            f"{si(self.seen)} {self.unit} seen",
        ]
        if self.final_loss is not None:
            lines.append(f"  train loss   {self.final_loss:.4f} (last logged)")
        if self.last_eval:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in self.last_eval.items())
            lines.append(f"  last eval    {shown}")
        if self.best_value is not None:
            lines.append(f"  best         {self.best_metric} {self.best_value:.4g} at step {self.best_step} -> {self.best_dir}")
        if self.checkpoint:
            lines.append(f"  checkpoint   {self.checkpoint}")
        if self.log_path:
            lines.append(f"  log          {self.log_path}")
        if self.curve_path:
            lines.append(f"  curves       {self.curve_path}")
        return "\n".join(lines)
