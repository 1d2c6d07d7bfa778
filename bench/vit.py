"""ViT against a small ResNet on Fashion-MNIST, same data, same augmentation, same CPU budget.

Every model trains through the one engine (``glassformer.train.Trainer``) on 55,000 of the 60,000
training images; the other 5,000 (``train_val_split``, seed 0) choose the best evaluation, and
the 10,000 test images are scored once, with that best checkpoint. A run's budget is wall time:
the script times a few optimizer steps first and sets ``max_steps`` (and so the cosine schedule)
to fill the budget. Runs that are compared start together, each on one thread of its own, so
they see the same machine at the same moment (the issue's 2-core budget is two runs x one core).

Sections (``--sections``, comma-separated; default all):

- ``sweep``: patch 4 vs 7 and depth 4 / 6 / 8 at a short fixed budget (``--sweep-minutes``),
  two at a time: accuracy and seconds per epoch;
- ``main``: the ``vit-fashion`` preset and ``CNNBaseline`` for ``--minutes`` each, side by side;
- ``speed``: images/s for inference and a training step, ours against ``transformers``' ViT on
  the same weights, with our fused (SDPA) and eager attention;
- ``pictures``: attention overlays and rollout of the main run's best ViT, a grid per class.

Run (``--quick`` checks the plumbing in a minute; its numbers mean nothing)::

    .venv/bin/python bench/vit.py                      # ~85 min: sweep 20, main 60, speed 3
    .venv/bin/python bench/vit.py --sections main --minutes 55

Writes ``bench/results/vit.json`` (``--quick``: ``vit_quick.json``) with ``vit_test_accuracy``,
``cnn_test_accuracy``, ``vit_train_minutes``, ``cnn_train_minutes``,
``inference_speedup_vs_transformers`` (their time / ours), the tables and the machine; PNGs
``vit_training.png`` (validation accuracy against minutes) and ``vit_attention_*.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Python puts this script's folder first on sys.path, where bench/tokenizers.py would shadow the
# tokenizers package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from glassformer.data.images import (  # noqa: E402
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    ImageClassificationData,
    fashion_mnist_sets,
    load_fashion_mnist,
)
from glassformer.models.vit.baseline import CNNBaseline, CNNConfig  # noqa: E402
from glassformer.models.vit.config import vit_fashion  # noqa: E402
from glassformer.models.vit.model import ViT  # noqa: E402
from glassformer.train import TrainConfig, Trainer  # noqa: E402
from glassformer.train.budget import seconds_per_step, steps_for_minutes  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.weights import read_safetensors  # noqa: E402
from glassformer.viz.figures import pyplot, save_figure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MEAN, STD = FASHION_MNIST_MEAN, FASHION_MNIST_STD
VAL_FRACTION = 5000 / 60000


# --- one training run (a child process) ------------------------------------------------------------

def build(spec: dict[str, Any]) -> torch.nn.Module:
    """A model from a run spec: ``{"kind": "vit"|"cnn", "overrides": {...}}``."""
    if spec["kind"] == "cnn":
        return CNNBaseline(CNNConfig(**spec.get("overrides", {})))
    return ViT(vit_fashion().replace(**spec.get("overrides", {})))


def datasets(quick: bool) -> tuple[ImageClassificationData, ImageClassificationData, ImageClassificationData]:
    """Train (augmented: crop with padding 2, flip), validation and test sets; ``quick`` keeps a few thousand images."""
    train, val = fashion_mnist_sets(val_fraction=VAL_FRACTION, augment="crop_flip", seed=0)
    test_x, test_y = load_fashion_mnist("test")
    if quick:
        train = ImageClassificationData(train.images[:2000], train.labels[:2000], augment=train.augment, mean=MEAN, std=STD)
        val = ImageClassificationData(val.images[:500], val.labels[:500], mean=MEAN, std=STD)
        test_x, test_y = test_x[:500], test_y[:500]
    return train, val, ImageClassificationData(test_x, test_y, mean=MEAN, std=STD)


@torch.no_grad()
def accuracy(model: torch.nn.Module, data: ImageClassificationData, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        batch = data.collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
        correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(data)


def wait_for_siblings(barrier: Path, name: str, count: int) -> None:
    """Mark this run ready and wait until all ``count`` runs of the group are, so that they time
    their steps together, each under the load of the others."""
    (barrier / f"{name}.ready").touch()
    while len(list(barrier.glob("*.ready"))) < count:
        time.sleep(0.2)


def train_one(spec: dict[str, Any], out_dir: Path, minutes: float, quick: bool, group: tuple[Path, int]) -> dict[str, Any]:
    """Train one spec for ``minutes`` of wall time; score the best validation checkpoint on test."""
    torch.manual_seed(0)
    train, val, test = datasets(quick)
    model = build(spec)
    wait_for_siblings(group[0], out_dir.name, group[1])
    batch = spec.get("batch_size", 128)
    per_step = seconds_per_step(model, train, batch, out_dir)
    steps_per_epoch = len(train) // batch
    # the budget pays for the training steps, the evaluations (a forward pass costs about a third of
    # a training step) and 3% for data loading and the checkpoints
    evals = spec.get("evals", 8) if not quick else 2
    eval_cost = evals * (len(val) / batch) * per_step / 3
    max_steps = steps_for_minutes(minutes, per_step, reserve=eval_cost)
    cfg = TrainConfig(
        out_dir=str(out_dir), seed=0, max_steps=max_steps, batch_size=batch, lr=spec.get("lr", 1e-3),
        weight_decay=spec.get("weight_decay", 0.05), betas=(0.9, 0.999), grad_clip=1.0, schedule="cosine",
        warmup_steps=max(1, max_steps // 20), min_lr_ratio=0.01, eval_interval=max(1, max_steps // evals),
        eval_batches=0, best_metric="eval_accuracy", best_mode="max", save_interval=max_steps, keep_last=1,
        log_interval=20, plot=False, precision="fp32",
    )
    start = time.perf_counter()
    summary = Trainer(model, cfg, train, val, collate_fn=train.collate).fit()
    train_minutes = (time.perf_counter() - start) / 60
    model.load_state_dict(read_safetensors(out_dir / "best" / "model.safetensors"))
    # the checkpoint carries its normalisation, so `glassformer classify` reads images the same way
    (out_dir / "best" / "preprocessor_config.json").write_text(json.dumps({"image_mean": MEAN, "image_std": STD}))
    best = json.loads((out_dir / "best" / "metrics.json").read_text())
    return {
        "spec": spec, "parameters": sum(p.numel() for p in model.parameters()),
        "train_minutes": round(train_minutes, 2), "max_steps": max_steps, "batch_size": batch,
        "epochs": round(max_steps / steps_per_epoch, 2),
        "seconds_per_epoch": round(per_step * steps_per_epoch, 1),
        "best_step": best["step"], "best_val_accuracy": best.get("eval_accuracy"),
        "test_accuracy": accuracy(model, test), "curve": eval_curve(out_dir / "log.jsonl", train_minutes / max_steps),
        "final_train_loss": getattr(summary, "final_loss", None),
    }


def eval_curve(log: Path, minutes_per_step: float) -> list[tuple[int, float, float]]:
    """(step, minutes, validation accuracy) for each evaluation in the engine's log; minutes are
    the step count at the run's average pace (the log counts steps, not seconds)."""
    rows = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if "eval_accuracy" in rec:
            rows.append((rec["step"], round(rec["step"] * minutes_per_step, 2), rec["eval_accuracy"]))
    return rows


# --- the parent: runs side by side ---------------------------------------------------------------

def run_pair(specs: dict[str, dict[str, Any]], minutes: float, work: Path, quick: bool) -> dict[str, Any]:
    """Start one child per spec (one thread each), wait for all, return their results by name."""
    procs = {}
    barrier = work / "barrier"
    barrier.mkdir(parents=True, exist_ok=True)
    for stale in barrier.glob("*.ready"):
        stale.unlink()
    for name, spec in specs.items():
        out = work / name
        cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--out-dir", str(out),
               "--minutes", str(minutes), "--group", f"{barrier}:{len(specs)}"] + (["--quick"] if quick else [])
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        log = open(work / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for name, (proc, log) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"run {name} failed: see {work / (name + '.log')}")
        log.close()
        results[name] = json.loads((work / name / "result.json").read_text())
    return results


SWEEP = {  # two evaluations each (half-way and at the end): at a short budget they are costly
    "patch7_depth6": {"kind": "vit", "overrides": {"patch_size": 7}, "evals": 2},
    "patch4_depth4": {"kind": "vit", "overrides": {"patch_size": 4, "n_layers": 4}, "evals": 2},
    "patch4_depth6": {"kind": "vit", "overrides": {"patch_size": 4}, "evals": 2},
    "patch4_depth8": {"kind": "vit", "overrides": {"patch_size": 4, "n_layers": 8}, "evals": 2},
}


def section_sweep(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    names = list(SWEEP)
    rows: dict[str, Any] = {}
    for i in range(0, len(names), 2):
        pair = {n: SWEEP[n] for n in names[i:i + 2]}
        rows.update(run_pair(pair, args.sweep_minutes, work / "sweep", args.quick))
    table = {n: {k: r[k] for k in ("parameters", "seconds_per_epoch", "epochs", "best_val_accuracy", "test_accuracy")}
             for n, r in rows.items()}
    for n, row in table.items():
        print(f"sweep {n:14s} params {row['parameters']:>8,d}  {row['seconds_per_epoch']:7.1f} s/epoch  "
              f"{row['epochs']:5.2f} epochs  val {row['best_val_accuracy']:.4f}  test {row['test_accuracy']:.4f}")
    return {"sweep_minutes_each": args.sweep_minutes, "sweep": table}


MAIN = {  # vit-fashion (patch 7: at this budget the sweep's patch-4 models see too few images)
    "vit": {"kind": "vit", "overrides": {}},
    "cnn": {"kind": "cnn", "overrides": {}},
}


def section_main(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    runs = run_pair(MAIN, args.minutes, work / "main", args.quick)
    for name, r in runs.items():
        print(f"main {name}: {r['parameters']:,d} params, {r['train_minutes']:.1f} min, {r['epochs']} epochs, "
              f"best val {r['best_val_accuracy']:.4f} at step {r['best_step']}, test {r['test_accuracy']:.4f}")
    plot_curves(runs, figures(args, work) / "vit_training.png")
    return {
        "vit_test_accuracy": runs["vit"]["test_accuracy"], "cnn_test_accuracy": runs["cnn"]["test_accuracy"],
        "vit_train_minutes": runs["vit"]["train_minutes"], "cnn_train_minutes": runs["cnn"]["train_minutes"],
        "main": {n: {k: v for k, v in r.items()} for n, r in runs.items()},
        "budget_minutes_each": args.minutes, "threads_each": 1,
    }


def plot_curves(runs: dict[str, Any], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, r in runs.items():
        _, minutes, acc = zip(*r["curve"]) if r["curve"] else ((), (), ())
        ax.plot(minutes, acc, marker="o", label=f"{name} ({r['parameters'] / 1e6:.2f}M, test {r['test_accuracy']:.3f})")
    ax.axhline(0.93, color="grey", linestyle="--", linewidth=0.8, label="goal 0.93")
    ax.set_xlabel("minutes of training (one core each)")
    ax.set_ylabel("validation accuracy (5,000 held-out train images)")
    ax.set_title("Fashion-MNIST: ViT vs CNN, same budget")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _time(fn: Any, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def section_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Images/s of ours (SDPA and eager) and transformers' ViT on the same weights, 2 threads."""
    import transformers

    from glassformer.models.vit.hf import save_pretrained

    torch.set_num_threads(2)
    torch.manual_seed(0)
    ours = ViT(vit_fashion()).eval()
    save_pretrained(ours, work / "hf-export")  # the same weights, through our exporter
    theirs = transformers.ViTForImageClassification.from_pretrained(work / "hf-export").eval()
    batch, reps = (32, 2) if args.quick else (256, 7)
    x = torch.randn(batch, 1, 28, 28)
    with torch.no_grad():
        diff = (ours(pixel_values=x).logits - theirs(pixel_values=x).logits).abs().max().item()
    rows: dict[str, float] = {}
    for backend in ("sdpa", "eager"):
        for m in ours.modules():
            if isinstance(getattr(m, "backend", None), str):
                m.backend = backend
        with torch.no_grad():
            rows[f"ours_{backend}_inference"] = batch / _time(lambda: ours(pixel_values=x), reps)
    with torch.no_grad():
        rows["transformers_inference"] = batch / _time(lambda: theirs(pixel_values=x), reps)
    y = torch.randint(0, 10, (batch,))
    ours.train()
    theirs.train()
    rows["ours_sdpa_train_step"] = batch / _time(lambda: ours(pixel_values=x, labels=y).loss.backward(), reps)
    rows["transformers_train_step"] = batch / _time(lambda: theirs(pixel_values=x, labels=y).loss.backward(), reps)
    for name, value in rows.items():
        print(f"speed {name:26s} {value:9.1f} images/s")
    speedup = rows["ours_sdpa_inference"] / rows["transformers_inference"]
    print(f"inference: ours {speedup:.2f}x transformers (same weights, max logit difference {diff:.1e})")
    return {
        "inference_speedup_vs_transformers": round(speedup, 3),
        "train_step_speedup_vs_transformers": round(rows["ours_sdpa_train_step"] / rows["transformers_train_step"], 3),
        "speed": {"images_per_second": {k: round(v, 1) for k, v in rows.items()}, "batch_size": batch,
                  "threads": 2, "max_logit_difference": diff, "transformers": transformers.__version__},
    }


def section_pictures(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Per-head and rollout overlays of a few test images and the per-class grid, from the main run's best ViT."""
    from glassformer.viz.vit import attention_pictures, fashion_test_grid

    best = work / "main" / "vit" / "best"
    if not best.is_dir():
        raise SystemExit(f"{best} is missing: run the main section first (--sections main)")
    from PIL import Image



    images, _ = load_fashion_mnist("test")
    out = figures(args, work)
    paths = [fashion_test_grid(best, out / "vit_attention_grid.png")]
    for index in (0, 1, 2):  # an ankle boot, a pullover, a trouser
        png = work / f"test{index}.png"
        Image.fromarray(images[index].numpy()).save(png)
        written, _ = attention_pictures(best, png, work)
        for path in written:
            paths.append(path.replace(out / f"vit_attention_{path.name}"))
    repo = RESULTS.parent.parent
    return {"pictures": [str(p.relative_to(repo)) if p.is_relative_to(repo) else str(p) for p in paths]}


def figures(args: argparse.Namespace, work: Path) -> Path:
    """Where pictures go: bench/results, or the work folder for --quick (whose numbers mean nothing)."""
    return work if args.quick else RESULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="sweep,main,speed,pictures")
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-time budget of each main run")
    parser.add_argument("--sweep-minutes", type=float, default=8.0)
    parser.add_argument("--work-dir", default="out/bench-vit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        out = Path(args.out_dir)
        barrier, count = args.group.rsplit(":", 1)
        result = train_one(json.loads(args.child), out, args.minutes, args.quick, (Path(barrier), int(count)))
        (out / "result.json").write_text(json.dumps(result, indent=2))
        return
    if args.quick:
        args.minutes, args.sweep_minutes = min(args.minutes, 0.5), min(args.sweep_minutes, 0.3)
    work = Path(args.work_dir)
    (work / "main").mkdir(parents=True, exist_ok=True)
    (work / "sweep").mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("vit_quick.json" if args.quick else "vit.json")
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for section in args.sections.split(","):
        results.update(SECTIONS[section](args, work))
        results["machine"] = describe()
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


SECTIONS = {"sweep": section_sweep, "main": section_main, "speed": section_speed, "pictures": section_pictures}

if __name__ == "__main__":
    main()
