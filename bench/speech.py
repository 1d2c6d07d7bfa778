"""The mini recogniser: ``whisper-digits`` trained here on FSDD + espeak-ng speech, scored by WER.

The run goes through ``glassformer train whisper-digits`` (the one engine, in a subprocess, as a
user would start it) on FSDD's 2,700 training takes plus synthetic digit strings and sentences
spoken by :data:`glassformer.data.speech.TRAIN_VOICES`, with SpecAugment. The best checkpoint (by
FSDD-test loss) is then decoded greedily and scored with ``glassformer.metrics.normalized_wer``:

- FSDD test (takes 0-4 of every speaker and digit, 300 clips; goal: WER <= 3%);
- synthetic speech in the voices training never heard (:data:`TEST_VOICES`).

Run (about 15 minutes on an idle 2-core machine; ``--quick`` is a two-minute check of the
plumbing whose numbers mean nothing)::

    .venv/bin/python bench/speech.py
    .venv/bin/python bench/speech.py --quick
    .venv/bin/python bench/speech.py --evaluate-only     # score a finished run again

Writes ``bench/results/speech.json`` (``--quick``: ``speech_quick.json``) with
``fsdd_test_wer_mini``, ``synthetic_test_wer_mini``, ``train_minutes_mini``, the WER table and
the machine, and ``speech_training.png`` (loss curves) and ``speech_wer.png`` (the WER table).
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

from glassformer.data.speech import (
    TEST_VOICES,
    FixedBatches,
    SpeechDataset,
    SpeechVocab,
    fsdd_split,
    synthetic_split,
)
from glassformer.generate import generate
from glassformer.metrics import normalized_wer
from glassformer.models import load_model
from glassformer.utils.machine import describe

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def train_mini(out_dir: Path, steps: int, batch_size: int, synthetic: int, threads: int) -> dict[str, Any]:
    """``glassformer train whisper-digits`` in a subprocess; returns its summary.json and wall minutes."""
    command = [
        sys.executable, "-m", "glassformer.cli", "train", "whisper-digits", f"out_dir={out_dir}",
        f"max_steps={steps}", f"batch_size={batch_size}", "lr=1e-3", f"warmup_steps={min(200, steps // 10)}",
        "weight_decay=0.01", f"eval_interval={max(steps // 10, 50)}", "eval_batches=0",
        f"save_interval={steps}", "log_interval=10", f"data.synthetic={synthetic}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLASSFORMER_PROGRESS_INTERVAL": "30"}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env=env)
    minutes = (time.perf_counter() - start) / 60
    summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    return {"summary": summary, "wall_minutes": minutes}


def recognise(model: torch.nn.Module, data: SpeechDataset, batch_size: int = 32) -> list[str]:
    """Greedy transcripts of every clip, in order (batched, padding hidden by the attention mask)."""
    vocab = data.vocab
    texts: list[str] = []
    for batch in FixedBatches(data, batch_size):
        out = generate(model, batch["input_features"], batch["attention_mask"], strategy="greedy", max_new_tokens=64,
                       stop_token_ids=(vocab.eos_token_id,), pad_token_id=vocab.pad_token_id)
        texts += [vocab.decode(tokens) for tokens in out.tokens]
    return texts


def score(name: str, model: torch.nn.Module, data: SpeechDataset) -> dict[str, Any]:
    """WER of ``model`` on ``data`` and a few of its mistakes, for the table."""
    start = time.perf_counter()
    hypotheses = recognise(model, data)
    seconds = time.perf_counter() - start
    errors = [{"reference": r, "hypothesis": h} for r, h in zip(data.texts, hypotheses) if r != h]
    return {"set": name, "clips": len(data), "wer": normalized_wer(data.texts, hypotheses),
            "wrong_clips": len(errors), "examples_wrong": errors[:8], "decode_seconds": seconds}


def plot_training(log_path: Path, out: Path) -> None:
    """Train and FSDD-test loss against the step, from the run's log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("kind") == "eval" and "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*train), label="train loss (SpecAugment)", lw=1)
    if evals:
        ax.plot(*zip(*evals), "o-", label="FSDD test loss")
    ax.set(xlabel="step", ylabel="cross-entropy per character", yscale="log", title="whisper-digits training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_table(rows: list[list[str]], header: list[str], out: Path) -> None:
    """The WER table as a picture, for the docs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * len(rows)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="left")
    table.scale(1, 1.4)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run to check the plumbing")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--synthetic", type=int, default=3000, help="synthetic training clips")
    parser.add_argument("--synthetic-test", type=int, default=300, help="clips in the held-out-voice test set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO / "out" / "bench-speech")
    parser.add_argument("--evaluate-only", action="store_true", help="score the finished run in --out-dir again")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.synthetic, args.synthetic_test = 60, 200, 40
    if args.evaluate_only:
        summary_path = args.out_dir / "summary.json"
        if not summary_path.is_file():
            raise SystemExit(f"--evaluate-only: {summary_path} not found; train first (drop --evaluate-only)")
    elif args.out_dir.exists() and any(args.out_dir.iterdir()):
        raise SystemExit(f"{args.out_dir} already holds a run; remove it, pass --out-dir, or --evaluate-only")
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""

    if args.evaluate_only:  # the minutes are the engine's own, read back from the finished run
        summary = json.loads((args.out_dir / "summary.json").read_text(encoding="utf-8"))
        run = {"summary": summary, "wall_minutes": summary["elapsed_s"] / 60}
    else:
        run = train_mini(args.out_dir, args.steps, args.batch_size, args.synthetic, args.threads)
    torch.set_num_threads(args.threads)
    model = load_model(args.out_dir / "best").eval()
    vocab = SpeechVocab()
    _, fsdd_test = fsdd_split()
    held_out = synthetic_split(0, args.synthetic_test, progress=False)[1]  # the builder's seed 0: same texts
    max_frames = model.config.max_frames
    sets = [score("FSDD test (300 takes 0-4)", model, SpeechDataset(fsdd_test, vocab, max_frames=max_frames,
                                                                  progress=False)),
            score(f"synthetic, held-out voices ({len(TEST_VOICES)})", model,
                  SpeechDataset(held_out, vocab, max_frames=max_frames, progress=False))]

    header = ["model", "test set", "clips", "WER", "wrong clips"]
    rows = [["whisper-digits (ours, trained here)", s["set"], str(s["clips"]), f"{100 * s['wer']:.2f}%",
             str(s["wrong_clips"])] for s in sets]
    summary = run["summary"]
    results = {
        "fsdd_test_wer_mini": sets[0]["wer"],
        "synthetic_test_wer_mini": sets[1]["wer"],
        "train_minutes_mini": run["wall_minutes"],
        "train": {"steps": summary["step"], "batch_size": args.batch_size, "synthetic_clips": args.synthetic,
                  "parameters": summary["parameters"], "best_step": summary["best_step"],
                  "best_eval_loss": summary["best_value"], "engine_seconds": summary["elapsed_s"],
                  "threads": args.threads},
        "wer_table": {"header": header, "rows": rows},
        "sets": sets,
        "quick": args.quick,
        "machine": describe(),
    }
    (RESULTS / f"speech{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot_training(args.out_dir / "log.jsonl", RESULTS / f"speech_training{suffix}.png")
    plot_table(rows, header, RESULTS / f"speech_wer{suffix}.png")
    for row in rows:
        print(" | ".join(row))
    print(f"trained {run['wall_minutes']:.1f} min; wrote {RESULTS / f'speech{suffix}.json'}")


if __name__ == "__main__":
    main()
