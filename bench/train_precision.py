"""fp32 against bf16 autocast for CPU training: ms/iter and validation loss, through the Trainer.

Is ``precision=auto`` right to pick bf16 on a CPU only where it computes bf16 natively
(``glassformer.utils.machine.cpu_bf16()``: the ``amx_bf16`` / ``avx512_bf16`` flags)? The workload
is nanoGPT's CPU run of shakespeare_char: the ``shakespeare-char`` preset (4 layers, width 128,
0.8M parameters), 12 x 64 characters per step, lr 1e-3 with 100 warmup steps and cosine decay to
1e-4 at ``--steps``, betas 0.9/0.99, weight decay 0.1, clip 1.0, validation on 20 batches every
250 steps. The text is Tiny Shakespeare (``glassformer.data.prepare``'s default corpus; the
embedded corpus where the shared data lacks it).

ms/iter is the median over logged steps after the first (steps with an evaluation or a checkpoint
included; the median ignores them). On a CPU without native bf16, bf16 first runs
``--probe-steps`` steps; when that is more than ``--max-slowdown`` times slower than fp32, the
long bf16 run is skipped and the JSON says so: emulated bf16 would take hours.

Run: ``.venv/bin/python -P bench/train_precision.py`` (a few minutes on 2 CPU cores). Results go to
``bench/results/train_precision.json`` with ``describe()``, and the loss curves to the ``.png`` next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from glassformer import registry
from glassformer.data import prepare
from glassformer.train import TrainConfig, Trainer, seed_everything
from glassformer.utils.machine import cpu_bf16, describe
from glassformer.viz.figures import pyplot, save_figure

PRESET = "shakespeare-char"
BATCH = 12
RECIPE: dict[str, Any] = {
    "batch_size": BATCH, "lr": 1e-3, "min_lr_ratio": 0.1, "warmup_steps": 100, "betas": (0.9, 0.99),
    "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 250, "eval_batches": 20, "seed": 1337,
}  # fmt: skip


def train(data: Any, model_config: Any, precision: str, steps: int, work: Path) -> dict[str, Any]:
    """One run through the Trainer; its timings and curves read back from log.jsonl."""
    out = work / f"{precision}-{steps}-{time.time_ns()}"
    block = model_config.max_seq_len
    cfg = TrainConfig(out_dir=str(out), max_steps=steps, precision=precision, device="cpu", log_interval=1,
                      save_interval=steps, progress=False, plot=False, **RECIPE)
    seed_everything(cfg.seed)
    model = registry.get(PRESET).build(model_config)
    batches = data.batch_fn(BATCH, block)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        summary = Trainer(model, cfg, batches, batches).fit()
    wall = time.perf_counter() - t0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_curve = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    times = [BATCH * block / r["tok_per_s"] * 1000.0 for r in records if r["kind"] == "train" and r["step"] > 1]
    val_curve = [(r["step"], r["eval_loss"]) for r in records if r["kind"] == "eval"]
    return {
        "precision": summary.precision, "steps": steps, "ms_per_iter_median": round(statistics.median(times), 2),
        "val_loss": round(val_curve[-1][1], 4), "wall_s": round(wall, 1), "train_curve": train_curve,
        "val_curve": val_curve, "warnings": sorted({str(w.message) for w in caught}),
    }  # fmt: skip


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 5))
    for run, color in zip(runs, ("tab:blue", "tab:orange")):
        steps, losses = zip(*run["train_curve"])
        k = 25  # a running mean: single batches of 768 characters are noisy
        smooth = [sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
                  for i in range(len(losses))]  # fmt: skip
        name = f"{run['precision']} ({run['ms_per_iter_median']:.1f} ms/iter)"
        ax.plot(steps, smooth, color=color, alpha=0.6, lw=1, label=f"{name} train (mean of 25)")
        vs, vl = zip(*run["val_curve"])
        ax.plot(vs, vl, "o-", color=color, lw=2, label=f"{run['precision']} val")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/char)", title=title, ylim=(1.3, 4.5))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000, help="steps per full run (nanoGPT's CPU run: 2000)")
    p.add_argument("--probe-steps", type=int, default=20, help="bf16 steps timed first on a CPU without native bf16")
    p.add_argument("--max-slowdown", type=float, default=2.0, help="skip the long bf16 run when slower than this")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_precision.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    support = cpu_bf16()
    print(f"native bf16: {support.native} ({support.reason}); {torch.get_num_threads()} threads", flush=True)

    with tempfile.TemporaryDirectory(prefix="train_precision-") as tmp:
        work = Path(tmp)
        data = prepare(None, "char", work / "data", progress=False)
        model_config = dataclasses.replace(registry.get(PRESET).make_config(), vocab_size=data.vocab_size)
        fp32 = train(data, model_config, "fp32", args.steps, work)
        print(f"fp32: {fp32['ms_per_iter_median']} ms/iter, val loss {fp32['val_loss']} ({fp32['wall_s']} s)", flush=True)
        probe, skipped = None, None
        if not support.native:
            probe = train(data, model_config, "bf16", args.probe_steps, work)
            slowdown = probe["ms_per_iter_median"] / fp32["ms_per_iter_median"]
            print(f"bf16 probe: {probe['ms_per_iter_median']} ms/iter over {args.probe_steps} steps "
                  f"({slowdown:.1f}x fp32)", flush=True)  # fmt: skip
            if slowdown > args.max_slowdown:
                skipped = (f"no native bf16 and the {args.probe_steps}-step probe ran {slowdown:.1f}x slower than "
                           f"fp32 (limit {args.max_slowdown}x): the {args.steps}-step bf16 run would take about "
                           f"{slowdown * fp32['wall_s'] / 60:.0f} min, so it was not run")  # fmt: skip
                print(skipped, flush=True)
        bf16 = None if skipped else train(data, model_config, "bf16", args.steps, work)
        if bf16 is not None:
            print(f"bf16: {bf16['ms_per_iter_median']} ms/iter, val loss {bf16['val_loss']} ({bf16['wall_s']} s)",
                  flush=True)
        source = data.meta["source"]

    timed_bf16 = bf16 or probe
    speedup = fp32["ms_per_iter_median"] / timed_bf16["ms_per_iter_median"] if timed_bf16 else None
    result = {
        "question": "bf16 autocast vs fp32 for CPU training of the shakespeare-char preset",
        "cpu_bf16": support.to_dict(),
        "fp32_ms_per_iter": fp32["ms_per_iter_median"],
        "bf16_ms_per_iter": timed_bf16["ms_per_iter_median"] if timed_bf16 else None,
        "bf16_ms_per_iter_from": "full run" if bf16 else f"{args.probe_steps}-step probe" if probe else None,
        "bf16_speedup_vs_fp32": round(speedup, 3) if speedup else None,
        "fp32_val_loss": fp32["val_loss"],
        "bf16_val_loss": bf16["val_loss"] if bf16 else None,
        "steps": args.steps,
        "bf16_full_run_skipped": skipped,
        "auto_resolves_to": "bf16" if support.native else "fp32",
        "preset": PRESET, "recipe": {**RECIPE, "block_size": model_config.max_seq_len}, "corpus": source,
        "threads": torch.get_num_threads(),
        "runs": [{k: v for k, v in r.items() if k != "train_curve"} for r in (fp32, probe, bf16) if r],
        "machine": describe(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    png = args.out.with_suffix(".png")
    title = f"{PRESET}, {args.steps} steps of {BATCH} x {model_config.max_seq_len}: fp32 vs bf16 autocast"
    if skipped:
        title += f"\n(bf16: {result['bf16_ms_per_iter']} ms/iter in a probe, {1 / speedup:.0f}x slower: not run)"
    plot([r for r in (fp32, bf16) if r], png, title)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
