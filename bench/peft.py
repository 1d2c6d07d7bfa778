"""Full fine-tuning vs LoRA vs QLoRA: all-MiniLM-L6-v2 on SST-2 on a CPU, and a LoRA rank/alpha sweep.

Accuracy is on SST-2's ``test.tsv`` (872 rows, GLUE's dev set); checkpoints are selected on a
validation split of the training rows (``glassformer.models.bert.finetune``, as
``bench/bert_sst2.py``). Each mode trains through the library's ``finetune`` with the same
budget; speed and memory are measured apart from those runs, each mode in a fresh process on the
same fixed batches:

* peak memory: the kernel's high-water mark of resident memory (``VmHWM``) during the training
  steps (reset through ``/proc/self/clear_refs`` once the model is built), minus the resident
  memory before the model was built: the model as it trains (float, or NF4 for QLoRA), gradients,
  AdamW's two moments and the activations kept for backward. Not
  ``tracemalloc``: it sees only Python's own allocator, and PyTorch allocates tensors in C++,
  outside it. Not RSS sampling either: a sampler can miss a peak between two reads; the kernel's
  mark cannot. A fresh process per mode, because memory freed by one mode stays mapped in the
  allocator and would hide the next mode's growth.
* seconds per step: the median of timed optimizer steps (forward, backward, AdamW) after warm-up,
  under the precision the training runs use (the engine's ``auto``: bf16 autocast on a CPU with
  native bf16, fp32 elsewhere).
* inference: the median forward time of a 64-row batch with the adapters unmerged vs merged
  (QLoRA's merge is its float model, ``merge_lora``).

Results go to ``bench/results/peft.json`` and ``peft.png``; ``--quick`` proves the plumbing on a
few hundred rows and writes under ``out/bench_peft_quick`` instead. Run the real one in the
background (each stage is stored as it ends and skipped on a rerun; ``--redo`` reruns it):

    nohup .venv/bin/python bench/peft.py --threads 2 --fast-tokenizer > out/bench_peft.log 2>&1 &
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import multiprocessing
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

# The script's folder first on sys.path would let bench/tokenizers.py shadow the `tokenizers` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from glassformer.models.bert.finetune import (  # noqa: E402
    SST2_LABELS,
    BucketedBatches,
    FinetuneSettings,
    LabelSet,
    Rows,
    encode_rows,
    finetune,
    load_sst2,
    with_lora,
)
from glassformer.peft import LoraConfig, merge_lora, set_merged, trainable_parameters  # noqa: E402
from glassformer.quant import memory_bytes  # noqa: E402
from glassformer.train.trainer import resolve_precision  # noqa: E402
from glassformer.utils.stages import run_stages  # noqa: E402
from glassformer.viz.figures import pyplot, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODES = ("full", "lora", "qlora")
STAGES = ("measure", "train", "sweep")


# ---------------------------------------------------------------------------------------------
# the models and data every stage shares


def lora_config(
    args: argparse.Namespace, mode: str, r: int | None = None, alpha: float | None = None
) -> LoraConfig | None:
    """The adapter of a mode (None for full fine-tuning); the classifier is added by ``with_lora``."""
    if mode == "full":
        return None
    target = args.target if args.target == "all-linear" else tuple(args.target.split("|"))
    return LoraConfig(r=r or args.r, alpha=alpha or args.alpha, dropout=args.lora_dropout, target=target,
                      quantize="nf4" if mode == "qlora" else None)  # fmt: skip


def base_model(args: argparse.Namespace) -> torch.nn.Module:
    from glassformer.models.bert.hf import from_pretrained
    from glassformer.utils.weights import resolve

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fresh classifier head is announced; expected here
        return from_pretrained(resolve("all-MiniLM-L6-v2"), head="sequence", num_labels=2,
                               label_names=SST2_LABELS, pooling=args.pooling)  # fmt: skip


def tokenizer(args: argparse.Namespace):
    from glassformer.models.bert.text import load_vocab_tokenizer
    from glassformer.utils.weights import resolve

    tok = load_vocab_tokenizer(resolve("all-MiniLM-L6-v2"))
    return tok.with_backend("fast") if args.fast_tokenizer else tok


def sst2(args: argparse.Namespace, max_train: int | None = None) -> tuple[Rows, Rows, Rows]:
    """SST-2's rows; ``max_train`` draws the seeded subset ``finetune`` would, before encoding (which
    would otherwise tokenize all 65k training rows for every run of the sweep)."""
    train, val, test = load_sst2(args.data, args.val_size, args.seed)
    if max_train and max_train < len(train):
        keep = sorted(random.Random(args.seed).sample(range(len(train)), max_train))
        train = Rows([train.texts[i] for i in keep], [train.labels[i] for i in keep], train.source)
    if args.max_test:  # --quick only: the table's dev accuracy is on all 872 rows
        test = Rows(test.texts[: args.max_test], test.labels[: args.max_test], test.source)
    return train, val, test


# ---------------------------------------------------------------------------------------------
# speed and memory, one mode per fresh process


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (peak memory needs Linux)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _inference_s(model: torch.nn.Module, mode: str, batch: dict, repeats: int) -> dict[str, float]:
    """Median forward seconds of one batch, adapters unmerged and merged."""
    model.eval()
    run = lambda m: lambda: m(**batch)  # noqa: E731
    with torch.inference_mode():
        unmerged = _timed(run(model), repeats)
        if mode == "full":
            return {"infer_unmerged_s": unmerged, "infer_merged_s": unmerged}
        if mode == "lora":
            set_merged(model, True)
            merged = _timed(run(model), repeats)
            set_merged(model, False)
        else:
            merged = _timed(run(merge_lora(copy.deepcopy(model))), repeats)
    return {"infer_unmerged_s": unmerged, "infer_merged_s": merged}


def measure(args: argparse.Namespace, mode: str) -> dict:
    """Peak training memory, seconds per step, trainable parameters and inference speed of a mode."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, _, test = sst2(args, (args.warmup_steps + args.steps) * args.batch_size)
    tok = tokenizer(args)
    from glassformer.models.bert.text import BertEncoder, pad_batch

    encoder = BertEncoder(tok, args.max_len)
    examples = encode_rows(encoder, train, LabelSet(SST2_LABELS))
    batches = [b for b in BucketedBatches(examples, args.batch_size, encoder.pad_id, args.seed)]
    infer_batch = pad_batch(encoder.encode_many(test.texts[:64]), encoder.pad_id)
    before_kb = _status_kb("VmRSS")
    model = base_model(args)
    config = lora_config(args, mode)
    if config is not None:
        model = with_lora(model, config)
    gc.collect()  # QLoRA's float weights, read before quantizing, are gone before training starts
    _reset_peak()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    precision = resolve_precision("auto", torch.device("cpu"))  # what the training runs use here
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup_steps:
            times.append(time.perf_counter() - start)
    peak_mb = (_status_kb("VmHWM") - before_kb) / 1024
    count = trainable_parameters(model)
    return {"trainable_params": count.trainable, "total_params": count.total, "peak_memory_mb": peak_mb,
            "model_mb": memory_bytes(model) / 2**20,  # parameters and buffers: QLoRA's NF4 bytes count here
            "s_per_step": statistics.median(times), "timed_steps": len(times), "precision": precision,
            **_inference_s(model, mode, infer_batch, args.infer_repeats)}  # fmt: skip


def stage_measure(args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    out = {}
    for mode in MODES:
        with context.Pool(1) as pool:
            out[mode] = pool.apply(measure, (args, mode))
        print(f"  {mode}: {out[mode]}", flush=True)
    return {"measure": out}


# ---------------------------------------------------------------------------------------------
# accuracy: the library's fine-tuning, one run per mode


def _settings(
    args: argparse.Namespace, name: str, lora: LoraConfig | None, lr: float, max_train: int | None
) -> FinetuneSettings:
    return FinetuneSettings(out_dir=str(Path(args.work) / name), epochs=args.epochs, batch_size=args.batch_size,
                            lr=lr, max_len=args.max_len, val_size=args.val_size, max_train=max_train,
                            seed=args.seed, progress=args.progress, lora=lora, base_name="all-MiniLM-L6-v2")  # fmt: skip


def _checkpoint_bytes(out_dir: Path, lora: LoraConfig | None) -> int:
    """What a run must keep: the whole model, or the adapter (with its head) alone."""
    path = (
        out_dir / "model" / "model.safetensors"
        if lora is None
        else out_dir / "adapter" / "adapter_model.safetensors"
    )
    return path.stat().st_size


def train_one(
    args: argparse.Namespace, name: str, lora: LoraConfig | None, lr: float, max_train: int | None
) -> dict:
    torch.set_num_threads(args.threads)
    train, val, test = sst2(args, max_train)
    settings = _settings(args, name, lora, lr, max_train)
    start = time.perf_counter()
    res = finetune(
        base_model(args), tokenizer(args), train, val, test, settings, known_labels=SST2_LABELS, resume=True
    )
    return {"dev_accuracy": res["test"]["accuracy"], "dev_f1": res["test"]["f1"], "val_accuracy": res["val"]["accuracy"],
            "train_examples": res["train_examples"], "steps": res["steps"], "best_step": res["best_step"],
            "wall_seconds": time.perf_counter() - start, "train_seconds": res["train_seconds"], "lr": lr,
            "checkpoint_bytes": _checkpoint_bytes(Path(settings.out_dir), lora)}  # fmt: skip


def stage_train(args: argparse.Namespace) -> dict:
    out = {}
    for mode in MODES:
        lr = args.full_lr if mode == "full" else args.lora_lr
        out[mode] = train_one(args, mode, lora_config(args, mode), lr, args.max_train)
        print(f"  {mode}: {out[mode]}", flush=True)
    return {"train": out}


def stage_sweep(args: argparse.Namespace) -> dict:
    """LoRA at each rank with alpha = 2 r, then alpha varied at r = 8, on the sweep's smaller budget."""
    pairs = [(r, 2.0 * r) for r in args.sweep_ranks] + [(8, a) for a in args.sweep_alphas if a != 16]
    rows = []
    for r, alpha in pairs:
        res = train_one(args, f"sweep-r{r}-a{alpha:g}", lora_config(args, "lora", r, alpha), args.lora_lr,
                        args.sweep_max_train)  # fmt: skip
        count = trainable_parameters(with_lora(base_model(args), lora_config(args, "lora", r, alpha)))
        rows.append({"r": r, "alpha": alpha, "trainable_params": count.trainable, **res})
        print(f"  r={r} alpha={alpha:g}: dev {res['dev_accuracy']:.4f}", flush=True)
    return {"sweep": rows}


# ---------------------------------------------------------------------------------------------
# the record


def headline(results: dict) -> dict:
    """The issue's top-level keys, from whichever stages have run."""
    out = {}
    for mode in MODES:
        if mode in results.get("train", {}):
            out[f"{mode}_dev_accuracy"] = results["train"][mode]["dev_accuracy"]
    m = results.get("measure", {})
    if "full" in m and "lora" in m:
        out["lora_step_speedup"] = m["full"]["s_per_step"] / m["lora"]["s_per_step"]
        out["lora_peak_memory_ratio"] = m["full"]["peak_memory_mb"] / m["lora"]["peak_memory_mb"]
    return out


def _cell(value: object, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(results: dict) -> str:
    m, t = results.get("measure", {}), results.get("train", {})
    lines = ["| | trainable params | model (MB) | peak train memory (MB) | s/step | wall (min) | dev acc (872) | checkpoint (MB) "
             "| infer unmerged (ms) | infer merged (ms) |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode in MODES:
        mm, tt = m.get(mode, {}), t.get(mode, {})
        wall = tt.get("wall_seconds")
        lines.append(" | ".join([
            f"| {mode}", _cell(mm.get("trainable_params"), ","), _cell(mm.get("model_mb"), ".1f"),
            _cell(mm.get("peak_memory_mb"), ".0f"),
            _cell(mm.get("s_per_step"), ".3f"), _cell(wall / 60 if wall else None, ".1f"),
            _cell(tt.get("dev_accuracy", 0) * 100 if tt else None, ".1f"),
            _cell(tt.get("checkpoint_bytes", 0) / 2**20 if tt else None, ".2f"),
            _cell(mm.get("infer_unmerged_s", 0) * 1000 if mm else None, ".0f"),
            _cell(mm.get("infer_merged_s", 0) * 1000 if mm else None, ".0f"),
        ]) + " |")  # fmt: skip
    if results.get("sweep"):
        lines += ["", "| r | alpha | trainable params | val acc | dev acc (872) |", "|---|---|---|---|---|"]
        lines += [f"| {row['r']} | {row['alpha']:g} | {row['trainable_params']:,} | {row['val_accuracy'] * 100:.1f} "
                  f"| {row['dev_accuracy'] * 100:.1f} |" for row in results["sweep"]]  # fmt: skip
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path | None:
    """Dev accuracy, seconds per step and peak memory per mode; dev accuracy against the rank."""
    plt = pyplot()

    m, t = results.get("measure", {}), results.get("train", {})
    panels = [("dev accuracy (%)", lambda mode: t.get(mode, {}).get("dev_accuracy", 0) * 100),
              ("seconds per step", lambda mode: m.get(mode, {}).get("s_per_step", 0)),
              ("peak training memory (MB)", lambda mode: m.get(mode, {}).get("peak_memory_mb", 0))]  # fmt: skip
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (title, value) in zip(axes, panels):
        ax.bar(MODES, [value(mode) for mode in MODES], color=["#555", "#1f77b4", "#ff7f0e"])
        ax.set_title(title)
    sweep = [row for row in results.get("sweep", []) if row["alpha"] == 2 * row["r"]]
    if sweep:
        axes[3].plot([row["r"] for row in sweep], [row["dev_accuracy"] * 100 for row in sweep], "o-")
        axes[3].set_xscale("log", base=2)
    axes[3].set_title("LoRA dev accuracy vs rank (alpha = 2r)")
    axes[3].set_xlabel("r")
    fig.tight_layout()
    return save_figure(fig, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument(
        "--redo", nargs="*", default=[], choices=STAGES, help="run these stages even if results exist"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a few hundred rows, a few steps, results under out/bench_peft_quick: proves the plumbing",
    )
    p.add_argument(
        "--result", type=Path, default=None, help="the JSON file (default bench/results/peft.json)"
    )
    p.add_argument("--work", default=None, help="checkpoints and run files (default out/bench_peft)")
    p.add_argument("--data", default=None, help="SST-2 folder (default: data_root()/sst2)")
    p.add_argument("--epochs", type=float, default=1.0, help="the budget of each training run")
    p.add_argument("--max-train", type=int, default=None, help="a random subset of the training rows per run")
    p.add_argument("--max-test", type=int, default=None, help=argparse.SUPPRESS)  # --quick sets it
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--val-size", type=int, default=2000)
    p.add_argument("--full-lr", type=float, default=1e-4)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--r", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument(
        "--lora-dropout",
        type=float,
        default=0.0,
        help="dropout on the LoRA branch; above 0 each adapted layer keeps its own dropped-out copy of "
        "its input for backward (q, k and v no longer share one), which costs LoRA its memory lead",
    )
    p.add_argument("--target", default="all-linear", help="LoRA target: all-linear or names joined by |")
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls")
    p.add_argument("--sweep-ranks", type=int, nargs="+", default=[1, 4, 8, 16, 64])
    p.add_argument("--sweep-alphas", type=float, nargs="+", default=[8.0, 32.0], help="alphas tried at r = 8")
    p.add_argument("--sweep-max-train", type=int, default=20000, help="the sweep's smaller budget per run")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per mode")
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--infer-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--fast-tokenizer", action="store_true", help="encode with the tokenizers-library backend")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.quick:
        args.max_train, args.max_test, args.val_size, args.epochs, args.max_len = 256, 64, 64, 1.0, 32
        args.steps, args.warmup_steps, args.infer_repeats = 2, 1, 1
        args.sweep_ranks, args.sweep_alphas, args.sweep_max_train = [1, 64], [], 64
    quick = ROOT / "out" / "bench_peft_quick"
    args.result = args.result or (
        quick / "peft.json" if args.quick else ROOT / "bench" / "results" / "peft.json"
    )
    args.work = args.work or str(quick if args.quick else ROOT / "out" / "bench_peft")
    return args


def main(argv: list[str] | None = None) -> int:
    from glassformer.utils.machine import describe
    from glassformer.utils.paths import data_root

    args = parse(argv)
    if args.data is None:
        root = data_root()
        if root is None or not (root / "sst2" / "test.tsv").is_file():
            print(
                "SST-2 is not in the data folder (sst2/ under GLASSFORMER_DATA or ../shared/data)",
                file=sys.stderr,
            )
            return 2
        args.data = str(root / "sst2")
    results = json.loads(args.result.read_text()) if args.result.is_file() else {}
    for stage in results.get("stages_done", []):  # a rerun on another machine keeps where each stage ran
        results.setdefault(f"{stage}_machine", results.get("machine"))
    results["machine"] = {**describe(), "torch_threads": args.threads}
    results["settings"] = {k: v for k, v in vars(args).items() if k not in ("result", "stages", "redo")}

    def save(results: dict) -> None:
        results.update(headline(results))
        results["png"] = plot(results, args.result.with_suffix(".png")).name
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def run(stage: str) -> dict:
        return {**globals()[f"stage_{stage}"](args), f"{stage}_machine": results["machine"]}

    run_stages(results, args.stages, run, save, args.redo)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
