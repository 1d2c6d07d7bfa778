"""The mini recogniser: ``whisper-digits`` trained here on FSDD + espeak-ng speech, scored by WER.

The run goes through ``glassformer train whisper-digits`` (the one engine, in a subprocess, as a
user would start it) on FSDD's 2,700 training takes plus synthetic digit strings and sentences
spoken by :data:`glassformer.data.speech.TRAIN_VOICES`, with SpecAugment. The best checkpoint (by the
loss on FSDD takes 5-7, held out of training; never test) is then decoded greedily and scored with ``glassformer.metrics.normalized_wer``:

- FSDD test (takes 0-4 of every speaker and digit, 300 clips; goal: WER <= 3%);
- synthetic speech in the voices training never heard (:data:`TEST_VOICES`).

Beside it, the packaged Whisper tiny.en zero-shot on the same clips (``transcribe``, greedy, each
clip in its own 30-s window, the same ``normalized_wer``), and the speed of tiny.en here against
transformers and faster-whisper (``bench/speech_speed.py``, where the settings are written down).

Sections (``--sections``, comma-separated; default all): ``train`` (the engine run), ``mini``
(score its best checkpoint), ``tiny_en`` (zero-shot WER), ``speed``. ``--skip-train`` runs every
section but ``train`` (the mini model is scored when ``--out-dir`` holds a finished run). Results
merge into the JSON already there, so one section can be rerun alone.

Run (about 25 minutes on an idle 2-core machine: 15 training, 5 tiny.en WER, 4 speed;
``--quick`` is a short check of the plumbing whose numbers mean nothing)::

    .venv/bin/python bench/speech.py
    .venv/bin/python bench/speech.py --quick
    .venv/bin/python bench/speech.py --evaluate-only     # score a finished run again
    .venv/bin/python bench/speech.py --sections tiny_en,speed

Writes ``bench/results/speech.json`` (``--quick``: ``speech_quick.json``) with
``fsdd_test_wer_mini``, ``synthetic_test_wer_mini``, ``train_minutes_mini``,
``fsdd_test_wer_tiny_en``, ``synthetic_test_wer_tiny_en``, ``jfk_transcript_exact``,
``speedup_vs_transformers``, ``time_ratio_vs_faster_whisper`` (details under ``speed``), the WER
table and the machine, and ``speech_training.png`` (loss curves) and ``speech_wer.png`` (the WER
table).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from glassformer.data.speech import (
    TEST_VOICES,
    FixedBatches,
    SpeechDataset,
    SpeechVocab,
    Utterance,
    fsdd_split,
    synthetic_split,
)
from glassformer.generate import generate
from glassformer.metrics import normalize_text, normalized_wer
from glassformer.models import load_model
from glassformer.utils.machine import describe
from glassformer.viz.figures import pyplot, save_figure

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("train", "mini", "tiny_en", "speed")
FSDD_SET = "FSDD test (300 takes 0-4)"
SYNTHETIC_SET = f"synthetic, held-out voices ({len(TEST_VOICES)})"
MINI = "whisper-digits (ours, trained here)"
TINY_EN = "Whisper tiny.en (zero-shot)"
WER_HEADER = ["model", "test set", "clips", "WER", "wrong clips"]


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
    plt = pyplot()

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
    save_figure(fig, out, dpi=120)


def plot_table(rows: list[list[str]], header: list[str], out: Path) -> None:
    """The WER table as a picture, for the docs."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * len(rows)))
    ax.axis("off")
    table = ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="left")
    table.scale(1, 1.4)
    fig.tight_layout()
    save_figure(fig, out, dpi=120)


def tiny_en_score(name: str, utterances: list[Utterance], tiny_en: tuple[torch.nn.Module, Any]) -> dict[str, Any]:
    """Zero-shot WER of tiny.en (``load_tiny_en()``'s pair) on ``utterances`` through ``transcribe``
    (greedy, one temperature, each clip its own 30-s window), normalised as for the mini model."""
    from glassformer.models.whisper.transcribe import transcribe

    model, tokenizer = tiny_en
    start = time.perf_counter()
    results = [transcribe(model, tokenizer, u.path, temperatures=(0.0,), condition_on_previous_text=False)
               for u in utterances]  # fmt: skip
    seconds = time.perf_counter() - start
    references, hypotheses = [u.text for u in utterances], [r.text for r in results]
    errors = [{"reference": r, "hypothesis": h} for r, h in zip(references, hypotheses)
              if normalize_text(r) != normalize_text(h)]  # fmt: skip
    return {"set": name, "clips": len(utterances), "wer": normalized_wer(references, hypotheses),
            "wrong_clips": len(errors), "examples_wrong": errors[:8], "decode_seconds": seconds,
            "skipped_as_silence": sum(w.skipped for r in results for w in r.windows)}  # fmt: skip


def mini_sets(args: argparse.Namespace, fsdd_test: list[Utterance], held_out: list[Utterance]) -> list[dict[str, Any]]:
    """The trained whisper-digits (``--out-dir``/best) on both test sets."""
    torch.set_num_threads(args.threads)
    model = load_model(args.out_dir / "best").eval()
    vocab = SpeechVocab()
    max_frames = model.config.max_frames
    return [score(FSDD_SET, model, SpeechDataset(fsdd_test, vocab, max_frames=max_frames, progress=False)),
            score(SYNTHETIC_SET, model, SpeechDataset(held_out, vocab, max_frames=max_frames, progress=False))]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run to check the plumbing")
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--synthetic", type=int, default=3000, help="synthetic training clips")
    parser.add_argument("--synthetic-test", type=int, default=300, help="clips in the held-out-voice test set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO / "out" / "bench-speech")
    parser.add_argument("--evaluate-only", action="store_true", help="score the finished run in --out-dir again")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {', '.join(SECTIONS)} (default: all); results merge into "
                             "the JSON already there")  # fmt: skip
    parser.add_argument("--skip-train", action="store_true", help="every section but train (same as --evaluate-only "
                        "for the mini model; it is scored only if --out-dir holds a run)")  # fmt: skip
    parser.add_argument("--speed-fsdd-files", type=int, default=100, help="FSDD clips the speed section times")
    parser.add_argument("--speed-jfk-repeats", type=int, default=5)
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.skip_train or args.evaluate_only:
        sections = [s for s in sections if s != "train"]
    if args.quick:
        args.steps, args.synthetic, args.synthetic_test = 60, 200, 40
        args.speed_fsdd_files, args.speed_jfk_repeats = min(args.speed_fsdd_files, 5), min(args.speed_jfk_repeats, 1)
    args.sections = sections
    return args


def check_run_dir(args: argparse.Namespace) -> None:
    """Refuse to train over a finished run, or to score one that is not there."""
    summary_path = args.out_dir / "summary.json"
    if "train" in args.sections:
        if args.out_dir.exists() and any(args.out_dir.iterdir()):
            raise SystemExit(f"{args.out_dir} already holds a run; remove it, pass --out-dir, --evaluate-only "
                             "or --skip-train")  # fmt: skip
    elif "mini" in args.sections and not summary_path.is_file():
        if args.evaluate_only or args.sections == ["mini"]:
            raise SystemExit(f"--evaluate-only: {summary_path} not found; train first (drop --evaluate-only)")
        print(f"no finished run in {args.out_dir}: the mini model is not scored (train it with --sections train,mini)")
        args.sections = [s for s in args.sections if s != "mini"]


def main() -> None:
    args = parse_args()
    check_run_dir(args)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    out = RESULTS / f"speech{suffix}.json"
    results: dict[str, Any] = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    if "train" in args.sections:
        run = train_mini(args.out_dir, args.steps, args.batch_size, args.synthetic, args.threads)
    elif "mini" in args.sections:  # the minutes are the engine's own, read back from the finished run
        summary = json.loads((args.out_dir / "summary.json").read_text(encoding="utf-8"))
        run = {"summary": summary, "wall_minutes": summary["elapsed_s"] / 60}
    _, fsdd_test = fsdd_split()
    held_out = synthetic_split(0, args.synthetic_test, progress=False)[1]  # the builder's seed 0: same texts
    rows_by_model: dict[str, list[list[str]]] = {}  # earlier runs' rows stay unless a section redoes them
    for row in results.get("wer_table", {}).get("rows", []):
        rows_by_model.setdefault(row[0], []).append(row)

    if "train" in args.sections or "mini" in args.sections:
        sets = mini_sets(args, fsdd_test, held_out)
        summary = run["summary"]
        results.update({
            "fsdd_test_wer_mini": sets[0]["wer"],
            "synthetic_test_wer_mini": sets[1]["wer"],
            "train_minutes_mini": run["wall_minutes"],
            "train": {"steps": summary["step"], "batch_size": args.batch_size, "synthetic_clips": args.synthetic,
                      "parameters": summary["parameters"], "best_step": summary["best_step"],
                      "best_eval_loss": summary["best_value"], "engine_seconds": summary["elapsed_s"],
                      "threads": args.threads},
            "sets": sets,
        })  # fmt: skip
        rows_by_model[MINI] = table_rows(MINI, sets)
        save(out, results, rows_by_model, args.quick)
        plot_training(args.out_dir / "log.jsonl", RESULTS / f"speech_training{suffix}.png")
    if "tiny_en" in args.sections:
        from glassformer.models.whisper.packaged import load_tiny_en

        torch.set_num_threads(args.threads)
        tiny_en = load_tiny_en()
        quick_fsdd = fsdd_test[::15]  # --quick: 20 clips, every digit and speaker
        sets = [tiny_en_score("FSDD test (20 of 300)", quick_fsdd, tiny_en) if args.quick
                else tiny_en_score(FSDD_SET, fsdd_test, tiny_en),
                tiny_en_score(SYNTHETIC_SET, held_out, tiny_en)]
        results.update({"fsdd_test_wer_tiny_en": sets[0]["wer"], "synthetic_test_wer_tiny_en": sets[1]["wer"],
                        "sets_tiny_en": sets,
                        "tiny_en_decoding": "glassformer transcribe, greedy, temperatures=(0.0,), no previous "
                                            "text, each clip padded to a 30-s window"})  # fmt: skip
        rows_by_model[TINY_EN] = table_rows(TINY_EN, sets)
        save(out, results, rows_by_model, args.quick)
    if "speed" in args.sections:
        results["speed"] = speed_module().measure(args.threads, args.speed_jfk_repeats, args.speed_fsdd_files)
        for key in ("jfk_transcript_exact", "speedup_vs_transformers", "time_ratio_vs_faster_whisper"):
            results[key] = results["speed"][key]
    rows = save(out, results, rows_by_model, args.quick)
    if rows:
        plot_table(rows, WER_HEADER, RESULTS / f"speech_wer{suffix}.png")
    for row in rows:
        print(" | ".join(row))
    if "speed" in results:
        print(f"tiny.en speed: {results['speedup_vs_transformers']:.2f}x transformers, "
              f"{results['time_ratio_vs_faster_whisper']:.2f}x faster-whisper's time")
    print(f"sections {', '.join(args.sections)}; wrote {out}")


def save(out: Path, results: dict[str, Any], rows_by_model: dict[str, list[list[str]]], quick: bool) -> list[list[str]]:
    """Write the JSON as it stands (after every section: a later one failing keeps the earlier); the table rows."""
    rows = [row for model_rows in rows_by_model.values() for row in model_rows]
    results.update({"wer_table": {"header": WER_HEADER, "rows": rows}, "quick": quick, "machine": describe()})
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return rows


def speed_module() -> ModuleType:
    """``bench/speech_speed.py``, by its path: the script's folder is not on ``sys.path`` under ``python -P``."""
    path = Path(__file__).resolve().with_name("speech_speed.py")
    spec = importlib.util.spec_from_file_location("speech_speed", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path} is missing: the speed section lives there")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(model: str, sets: list[dict[str, Any]]) -> list[list[str]]:
    """One WER-table row per test set."""
    return [[model, s["set"], str(s["clips"]), f"{100 * s['wer']:.2f}%", str(s["wrong_clips"])] for s in sets]


if __name__ == "__main__":
    main()
