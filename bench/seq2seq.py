"""Multi30k translation: the 2017 Transformer from scratch, T5 and BART with and without pretraining, BLEU checked.

Every model trains through the one engine (``glassformer.train.Trainer``) on Multi30k task 1
(train 29,000 pairs, val 1,014, test2016 1,000) with the joint en+de byte-level BPE of
``glassformer.data.multi30k``; BLEU is ``glassformer.translation.score_bleu`` (13a, detokenized),
and every reported score is recomputed by ``sacrebleu`` beside it. A run's budget is wall time:
the engine times a few steps of the real run first and sets ``max_steps`` (and so the schedule)
to fill it. bf16 autocast against fp32 is timed once on the Transformer (this Xeon has AMX) and
the faster is used by every run.

Sections (``--sections``, comma-separated; default all, in this order). Each is stored in the
work folder when it finishes and skipped on a rerun (``--redo NAME,...`` runs it again), so the
whole benchmark can be spread over several sittings:

- ``bleu_check``: our corpus BLEU against sacrebleu's on several systems' outputs (the references
  perturbed, the untranslated source, an untrained model's output), to 0.01; sacreBLEU's signature;
- ``en_de``: the Transformer (Vaswani et al. 2017, small: ~2.8M parameters, dropout 0.3, label
  smoothing 0.1, inverse-square-root warmup) for ``--minutes``; the last, the best (val loss) and
  the average of the last ``--average`` checkpoints compete on val BLEU, the length penalty is
  tuned on val (``--lp-grid``, beam ``--beam``), test2016 is scored once: greedy, beam 4 and beam 5;
- ``de_en``: the same recipe reversed, ``--minutes-de-en``;
- ``pretrain_t5``: span corruption on the monolingual sides of the training text for
  ``--pretrain-minutes``, then one model fine-tuned on both directions with task prefixes for
  ``--finetune-minutes``, against the same model from scratch for the same fine-tuning steps;
- ``pretrain_bart``: the same with BART's denoising (text infilling and sentence permutation),
  fine-tuned en->de;
- ``speed``: sentences/s translated one at a time with beam 4 by ours and by transformers'
  ``generate`` on the same T5 and BART weights (our Hugging Face export), outputs compared;
- ``pictures``: a test sentence's translation and its cross-attention alignment picture.

Run (``--quick`` checks the plumbing in well under a minute on the tiny twins; its numbers mean nothing)::

    .venv/bin/python bench/seq2seq.py --sections bleu_check,en_de        # ~100 min
    .venv/bin/python bench/seq2seq.py --sections de_en                   # ~55 min
    .venv/bin/python bench/seq2seq.py --sections pretrain_t5             # ~50 min (3 runs + 8 BLEU passes)
    .venv/bin/python bench/seq2seq.py --sections pretrain_bart           # ~45 min
    .venv/bin/python bench/seq2seq.py --sections speed,pictures          # ~5 min, after the sections above

The bf16/fp32 timing is stored as ``precision.json`` in the work folder (delete it to time again;
``--precision fp32|bf16`` skips it).

Writes ``bench/results/seq2seq.json`` (``--quick``: the work folder) with ``test2016_bleu_en_de``,
``test2016_bleu_de_en`` (sacreBLEU, beam), ``bleu_equals_sacrebleu``, ``train_minutes_en_de``,
``beam_speedup_vs_transformers`` (their time / ours), each section's tables, the settings and the
machine before and after; PNGs ``seq2seq_en_de_val_loss.png``, ``seq2seq_de_en_val_loss.png``,
``seq2seq_pretrain_t5.png``, ``seq2seq_pretrain_bart.png``, ``seq2seq_alignment.png`` (and ``_heads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Python puts this script's folder first on sys.path, where bench/tokenizers.py would shadow the
# tokenizers package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from glassformer import registry  # noqa: E402
from glassformer.data.multi30k import Multi30kOptions, load_pairs  # noqa: E402
from glassformer.metrics.bleu import corpus_bleu  # noqa: E402
from glassformer.train import TrainConfig, Trainer  # noqa: E402
from glassformer.train.averaging import average_last_checkpoints  # noqa: E402
from glassformer.train.budget import seconds_per_step, steps_for_minutes  # noqa: E402
from glassformer.train.checkpoint import latest_checkpoint, load_weights  # noqa: E402
from glassformer.translation import load_translator, score_bleu, sweep_length_penalty  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.paths import data_file  # noqa: E402
from glassformer.viz.figures import pyplot, save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
QUICK_VOCAB = 352  # the -tiny twins' toy vocabularies hold no byte alphabet: the smallest BPE that fits
QUICK_DATA = {"limit": 300, "val_limit": 32}
QUICK_TEST = 32  # test2016 sentences scored in --quick
GOAL_EN_DE = 38.0
ANCHORS = {  # test2016 en->de
    "Wu et al. 2021, tiny regularised Transformer (GPU; tokenized BLEU, 1-2 above sacreBLEU)": "about 41-42",
    "DGL-based Transformer reimplementations": "26-31",
}

# the small Transformer: Wu et al. 2021's tiny recipe (4+4 layers, 128 wide, dropout 0.3), the presets' 8k BPE
TRANSFORMER = {"vocab_size": 8000, "tgt_vocab_size": 8000, "dim": 128, "n_heads": 4, "n_layers": 4,
               "n_decoder_layers": 4, "ffn_dim": 512, "dropout": 0.3, "attn_dropout": 0.1,
               "label_smoothing": 0.1, "max_seq_len": 256}  # fmt: skip
PRESETS = {"transformer": "transformer-base", "t5": "t5-multi30k", "bart": "bart-multi30k"}
PRETRAIN_DATA = {"t5": "multi30k-span-corruption", "bart": "multi30k-denoising"}
FINETUNE_DIRECTION = {"t5": "both", "bart": "en-de"}  # T5 learns both directions behind task prefixes


# --- settings -----------------------------------------------------------------------------------


def preset_name(args: argparse.Namespace, family: str) -> str:
    return PRESETS[family] + ("-tiny" if args.quick else "")


def model_config(args: argparse.Namespace, family: str) -> Any:
    """The config a section trains: the preset (``-tiny`` twin for --quick) with the bench's overrides."""
    config = registry.get(preset_name(args, family)).make_config()
    fields: dict[str, Any] = {}
    if family == "transformer":
        fields = {**TRANSFORMER, **args.transformer}
    if args.quick:  # a vocabulary that holds the byte alphabet, and room for the tiny BPE's long sentences
        fields = {k: v for k, v in fields.items() if k in ("dropout", "attn_dropout", "label_smoothing")}
        fields.update(vocab_size=QUICK_VOCAB, max_seq_len=128)
        if family == "transformer":
            fields["tgt_vocab_size"] = QUICK_VOCAB
        if family == "t5":
            fields["sentinel_start_id"] = QUICK_VOCAB - 1
    return config.replace(**fields)


def data_options(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {**(QUICK_DATA if args.quick else {}), **extra}


def parse_overrides(text: str) -> dict[str, Any]:
    """``"dim=256,n_layers=3"`` -> ``{"dim": 256, "n_layers": 3}`` (values read as JSON where they parse)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"{item!r}: write overrides as KEY=VALUE, comma-separated")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def decode_options(args: argparse.Namespace) -> dict[str, Any]:
    """What every BLEU scoring passes to ``translate`` (--quick: a short limit for barely trained models)."""
    return {"batch_size": args.decode_batch, **({"max_new_tokens": 16} if args.quick else {})}


def test_limit(args: argparse.Namespace) -> int | None:
    return QUICK_TEST if args.quick else None


# --- training runs ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Recipe:
    """The optimizer side of a run (the model and data are the section's)."""

    lr: float
    schedule: str = "cosine"
    warmup: int = 0
    batch_size: int = 128
    evals: int = 20
    keep_last: int = 1
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9


def build_model(args: argparse.Namespace, family: str, config: Any) -> Any:
    torch.manual_seed(0)  # every run of a family starts from the same weights
    return registry.get(preset_name(args, family)).build(config)


def build_data(args: argparse.Namespace, family: str, config: Any, out: Path, batch: int, data: str | None,
               options: dict[str, Any]) -> tuple[Any, Any]:  # fmt: skip
    """The family's Multi30k builder (translation, span corruption or denoising); it saves the run's tokenizer in ``out``."""
    preset = registry.get(preset_name(args, family))
    probe = TrainConfig(out_dir=str(out), batch_size=batch, max_steps=1)
    return registry.data_builder(preset, data)(probe, config, registry.DataRequest(preset, options))


def train_config(
    args: argparse.Namespace, out: Path, recipe: Recipe, max_steps: int, precision: str
) -> TrainConfig:
    """The engine's settings: 1/40 of the run between checkpoints, warmup at most a quarter of it."""
    warmup = max(1, min(recipe.warmup, max_steps // 4))
    return TrainConfig(
        out_dir=str(out), seed=0, max_steps=max_steps, batch_size=recipe.batch_size, lr=recipe.lr,
        weight_decay=recipe.weight_decay, betas=recipe.betas, eps=recipe.eps, grad_clip=1.0,
        schedule=recipe.schedule, warmup_steps=warmup, min_lr_ratio=0.05,
        eval_interval=max(1, max_steps // recipe.evals), eval_batches=0,
        save_interval=max(1, max_steps // 40), keep_last=recipe.keep_last, log_interval=max(1, min(50, max_steps // 10)),
        progress=not args.quick, plot=False, precision=precision,
    )  # fmt: skip


def budget_steps(args: argparse.Namespace, model: Any, train: Any, val: Any, recipe: Recipe, minutes: float,
                 work: Path, precision: str) -> tuple[int, float]:  # fmt: skip
    """(max_steps, seconds per step) for ``minutes`` of training, evaluations paid for out of it."""
    per_step = seconds_per_step(model, train, recipe.batch_size, work, steps=4 if args.quick else 20,
                                precision=precision, grad_clip=1.0)  # fmt: skip
    # an evaluation batch (a forward pass) costs about a third of a training step
    eval_cost = recipe.evals * len(val) * per_step / 3
    return steps_for_minutes(minutes, per_step, reserve=eval_cost, at_least=20), per_step


def fit(args: argparse.Namespace, family: str, config: Any, train: Any, val: Any, out: Path, recipe: Recipe,
        max_steps: int, precision: str, init: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Train a fresh model (or one starting from ``init``'s weights) for ``max_steps``; the run's record."""
    model = build_model(args, family, config)
    if init is not None:
        load_weights(model, init)
    cfg = train_config(args, out, recipe, max_steps, precision)
    start = time.perf_counter()
    summary = Trainer(model, cfg, train, val, model_config=config).fit()
    minutes = (time.perf_counter() - start) / 60
    return {
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad), "max_steps": max_steps,
        "train_minutes": round(minutes, 2), "epochs": round(max_steps * recipe.batch_size / len(train.examples), 2),
        "final_train_loss": summary.final_loss, "best_step": summary.best_step, "best_eval_loss": summary.best_value,
        "precision": summary.precision, "init": str(init) if init else None, "curve": eval_curve(out / "log.jsonl"),
        "train_config": cfg.to_dict(),
    }  # fmt: skip


def eval_curve(log: Path) -> list[tuple[int, float]]:
    """(step, validation loss) of each evaluation in the engine's log."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [
        (r["step"], round(r["eval_loss"], 4)) for r in rows if r.get("kind") == "eval" and "eval_loss" in r
    ]


def precision_choice(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """bf16 autocast vs fp32: seconds per step of the en->de Transformer, measured once and stored."""
    path = work / "precision.json"
    if args.precision != "measure":
        return {"chosen": args.precision, "measured": False}
    if path.is_file():
        return json.loads(path.read_text())
    config = model_config(args, "transformer")
    recipe = transformer_recipe(args)
    out = work / "precision"
    train, _ = build_data(
        args, "transformer", config, out, recipe.batch_size, None, data_options(args, direction="en-de")
    )
    model = build_model(args, "transformer", config)
    steps = 4 if args.quick else 30
    times = {p: seconds_per_step(model, train, recipe.batch_size, out / p, steps=steps, precision=p, grad_clip=1.0)
             for p in ("fp32", "bf16")}  # fmt: skip
    chosen = min(times, key=times.get)
    found = {"chosen": chosen, "measured": True, "seconds_per_step": {k: round(v, 4) for k, v in times.items()},
             "bf16_speedup": round(times["fp32"] / times["bf16"], 3), "batch_size": recipe.batch_size}  # fmt: skip
    print(
        f"precision: fp32 {times['fp32']:.3f} s/step, bf16 {times['bf16']:.3f} s/step -> {chosen}", flush=True
    )
    shutil.rmtree(out, ignore_errors=True)
    path.write_text(json.dumps(found, indent=2) + "\n")
    return found


# --- BLEU, ours and sacrebleu's ----------------------------------------------------------------------


def against_sacrebleu(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """Our corpus BLEU and sacrebleu's (13a) on the same output; equal when within 0.01 with the same lengths."""
    import sacrebleu

    ours = corpus_bleu(hypotheses, [references])
    theirs = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="13a")
    same = abs(ours.score - theirs.score) < 0.01 and (ours.sys_len, ours.ref_len) == (
        theirs.sys_len,
        theirs.ref_len,
    )
    return {"ours": round(ours.score, 4), "sacrebleu": round(theirs.score, 4),
            "difference": abs(ours.score - theirs.score), "equal": same}  # fmt: skip


def scored(label: str, run: Callable[[], Any]) -> dict[str, Any]:
    """Translate-and-score with ``run()`` (a ``score_bleu`` call), timed, checked against sacrebleu."""
    start = time.perf_counter()
    report = run()
    seconds = time.perf_counter() - start
    check = against_sacrebleu(report.hypotheses, report.references)
    print(f"{label}: sacreBLEU {check['sacrebleu']:.2f} (ours {check['ours']:.2f}), {len(report.hypotheses)} sentences "
          f"in {seconds:.1f} s ({len(report.hypotheses) / seconds:.1f} sentences/s)", flush=True)  # fmt: skip
    return {"bleu": check["sacrebleu"], "ours": check["ours"], "equals_sacrebleu": check["equal"],
            "brevity_penalty": round(report.bleu.brevity_penalty, 4), "sys_len": report.bleu.sys_len,
            "ref_len": report.bleu.ref_len, "sentences": len(report.hypotheses), "seconds": round(seconds, 1),
            "examples": [{"source": s, "output": h, "reference": r}
                         for s, h, r in list(zip(report.sources, report.hypotheses, report.references))[:3]]}  # fmt: skip


def perturbed_systems(references: list[str], sources: list[str]) -> dict[str, list[str]]:
    """Made-up systems over the whole BLEU range: exact, word drops, swaps, truncation, wrong sentences,
    no translation, and a degenerate model's output (nothing matches at any order)."""
    rng = random.Random(0)

    def drop(line: str, p: float) -> str:
        return " ".join(w for w in line.split() if rng.random() >= p)

    def swap(line: str) -> str:
        words = line.split()
        for i in range(0, len(words) - 1, 3):
            words[i], words[i + 1] = words[i + 1], words[i]
        return " ".join(words)

    return {
        "reference": list(references), "drop_10%": [drop(r, 0.1) for r in references],
        "drop_50%": [drop(r, 0.5) for r in references], "swap_pairs": [swap(r) for r in references],
        "first_half": [" ".join(r.split()[: max(1, len(r.split()) // 2)]) for r in references],
        "lowercased": [r.lower() for r in references], "next_sentence": references[1:] + references[:1],
        "source_copy": list(sources), "one_token_repeated": ["d d d d d d d d"] * len(references),
    }  # fmt: skip


def section_bleu_check(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import sacrebleu

    from glassformer.translation import translate

    pairs = load_pairs("test", "en-de", limit=test_limit(args))
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    systems = perturbed_systems(references, sources)
    config = model_config(args, "transformer")
    untrained, tokenizer = (
        build_model(args, "transformer", config).eval(),
        family_tokenizer(args, "transformer", config),
    )
    count = 16 if args.quick else 200
    systems["untrained_model"] = translate(
        untrained, tokenizer, sources[:count], strategy="greedy", max_new_tokens=20
    )
    rows = {}
    for name, hyps in systems.items():
        refs = references[: len(hyps)]
        rows[name] = against_sacrebleu(hyps, refs)
        print(f"bleu_check {name:20s} ours {rows[name]['ours']:7.2f}  sacrebleu {rows[name]['sacrebleu']:7.2f}  "
              f"{'equal' if rows[name]['equal'] else 'DIFFERENT'}", flush=True)  # fmt: skip
    metric = sacrebleu.BLEU(tokenize="13a")
    metric.corpus_score(systems["reference"], [references])
    return {"bleu_equals_sacrebleu": all(r["equal"] for r in rows.values()), "systems": rows,
            "max_difference": max(r["difference"] for r in rows.values()), "tolerance": 0.01,
            "sacrebleu_signature": str(metric.get_signature()), "sentences": len(references)}  # fmt: skip


def family_tokenizer(args: argparse.Namespace, family: str, config: Any) -> Any:
    """The joint Multi30k BPE laid out for ``family`` (the one its data builder trains with)."""
    module = importlib.import_module(f"glassformer.models.{family}.data")
    options = Multi30kOptions(limit=QUICK_DATA["limit"] if args.quick else None)
    return getattr(module, f"{family}_tokenizer")(config, options, preset_name(args, family))


# --- en->de and de->en: the 2017 Transformer ---------------------------------------------------------------


def transformer_recipe(args: argparse.Namespace) -> Recipe:
    """Vaswani et al.'s optimizer (Adam 0.9/0.98, eps 1e-9, inverse-square-root warmup), with clipping."""
    return Recipe(lr=args.lr, schedule="inverse_sqrt", warmup=args.warmup, batch_size=args.batch_size,
                  evals=4 if args.quick else 30, keep_last=args.average)  # fmt: skip


def pick_candidate(args: argparse.Namespace, out: Path, direction: str) -> tuple[str, Path, dict[str, Any]]:
    """The last checkpoint, the best by val loss and the average of the last few, by greedy val BLEU."""
    candidates = {
        "last": latest_checkpoint(out / "checkpoints"),
        "best_val_loss": out / "best",
        f"average_last_{args.average}": average_last_checkpoints(
            out / "checkpoints", args.average, out / "averaged"
        ),
    }
    rows = {}
    for name, folder in candidates.items():
        tr = load_translator(folder)
        rows[name] = scored(f"{direction} val greedy [{name}]", lambda tr=tr: score_bleu(
            tr.model, tr.tokenizer, split="val", direction=direction, directions=tr.directions, strategy="greedy",
            limit=QUICK_DATA["val_limit"] if args.quick else None, **decode_options(args)))  # fmt: skip
    chosen = max(rows, key=lambda n: rows[n]["bleu"])
    return chosen, Path(candidates[chosen]), rows


def translation_section(
    args: argparse.Namespace, work: Path, direction: str, minutes: float
) -> dict[str, Any]:
    """Train the Transformer ``direction`` for ``minutes``, choose the model and length penalty on val, score test2016."""
    tag = direction.replace("-", "_")
    out = work / f"transformer_{tag}"
    shutil.rmtree(out, ignore_errors=True)  # the section starts over
    precision = precision_choice(args, work)
    config, recipe = model_config(args, "transformer"), transformer_recipe(args)
    train, val = build_data(
        args, "transformer", config, out, recipe.batch_size, None, data_options(args, direction=direction)
    )
    probe = build_model(args, "transformer", config)
    max_steps, per_step = budget_steps(args, probe, train, val, recipe, minutes, work, precision["chosen"])
    print(f"{direction}: {max_steps} steps of {per_step:.3f} s ({max_steps * recipe.batch_size / len(train.examples):.1f} "
          f"epochs) in {minutes} min, precision {precision['chosen']}", flush=True)  # fmt: skip
    run = fit(args, "transformer", config, train, val, out, recipe, max_steps, precision["chosen"])
    chosen, folder, candidates = pick_candidate(args, out, direction)
    tr = load_translator(folder)
    val_limit = QUICK_DATA["val_limit"] if args.quick else None
    sweep = sweep_length_penalty(tr.model, tr.tokenizer, args.lp_grid, direction=direction, num_beams=args.beam,
                                 directions=tr.directions, limit=val_limit, **decode_options(args))  # fmt: skip
    print(f"{direction} length penalty on val (beam {args.beam}): " + ", ".join(
        f"{p}: {s:.2f}" for p, s in sweep.scores.items()) + f" -> {sweep.best}", flush=True)  # fmt: skip
    common = dict(
        split="test",
        direction=direction,
        directions=tr.directions,
        limit=test_limit(args),
        **decode_options(args),
    )
    test = {
        "greedy": scored(
            f"{direction} test greedy",
            lambda: score_bleu(tr.model, tr.tokenizer, strategy="greedy", **common),
        )
    }
    for beams in sorted({args.beam, 4, 5}):
        test[f"beam{beams}"] = scored(f"{direction} test beam {beams}", lambda b=beams: score_bleu(
            tr.model, tr.tokenizer, strategy="beam", num_beams=b, length_penalty=sweep.best, **common))  # fmt: skip
    plot_curves({f"Transformer {direction} ({run['parameters'] / 1e6:.1f}M)": run["curve"]},
                figures(args, work) / f"seq2seq_{tag}_val_loss.png", f"Multi30k {direction}: validation loss")  # fmt: skip
    headline = test[f"beam{args.beam}"]
    checks = [r["equals_sacrebleu"] for r in (*test.values(), *candidates.values())]
    return {
        "test2016_bleu": headline["bleu"], "train_minutes": run["train_minutes"], "budget_minutes": minutes,
        "seconds_per_step": round(per_step, 4), "precision": precision, "run": run, "model_config": config.to_dict(),
        "chosen_model": chosen, "chosen_folder": str(folder), "val_greedy_bleu": candidates,
        "length_penalty": sweep.best, "length_penalty_sweep": sweep.table(), "test2016": test,
        "bleu_equals_sacrebleu": all(checks), **(goal(headline["bleu"]) if direction == "en-de" else {}),
    }  # fmt: skip


def goal(bleu: float) -> dict[str, Any]:
    """The issue's goal for en->de and the published anchors it is read against (reported, not asserted)."""
    return {"goal": GOAL_EN_DE, "goal_met": bleu >= GOAL_EN_DE, "anchors": ANCHORS}


def section_en_de(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return translation_section(args, work, "en-de", args.minutes)


def section_de_en(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return translation_section(args, work, "de-en", args.minutes_de_en)


# --- does pretraining help? ------------------------------------------------------------------------------


def pretrain_recipe(args: argparse.Namespace, lr: float) -> Recipe:
    return Recipe(lr=lr, schedule="cosine", warmup=100 if not args.quick else 2, batch_size=args.batch_size,
                  evals=4 if args.quick else 20, keep_last=1, weight_decay=0.01)  # fmt: skip


def finetuned_bleu(args: argparse.Namespace, folder: Path, label: str) -> dict[str, Any]:
    """Greedy and beam-4 test2016 BLEU of a fine-tuned run, in each direction it learned."""
    tr = load_translator(folder)
    rows: dict[str, Any] = {}
    for direction in tr.directions:
        common = dict(
            split="test",
            direction=direction,
            directions=tr.directions,
            limit=test_limit(args),
            **decode_options(args),
        )
        rows[direction] = {
            "greedy": scored(f"{label} {direction} test greedy", lambda c=common: score_bleu(tr.model, tr.tokenizer, strategy="greedy", **c)),
            "beam4": scored(f"{label} {direction} test beam 4", lambda c=common: score_bleu(tr.model, tr.tokenizer, num_beams=4, **c)),
        }  # fmt: skip
    return rows


def pretrain_section(args: argparse.Namespace, work: Path, family: str) -> dict[str, Any]:
    """Pretrain, fine-tune, and fine-tune the same model from scratch for as many steps; BLEU and curves."""
    root = work / f"pretrain_{family}"
    shutil.rmtree(root, ignore_errors=True)
    precision = precision_choice(args, work)["chosen"]
    config = model_config(args, family)
    pre_recipe, ft_recipe = pretrain_recipe(args, args.pretrain_lr), pretrain_recipe(args, args.finetune_lr)
    pre_train, pre_val = build_data(args, family, config, root / "pretrain", pre_recipe.batch_size, PRETRAIN_DATA[family],
                                    data_options(args))  # fmt: skip
    probe = build_model(args, family, config)
    pre_steps, pre_per_step = budget_steps(
        args, probe, pre_train, pre_val, pre_recipe, args.pretrain_minutes, root, precision
    )
    print(
        f"{family} pretraining ({PRETRAIN_DATA[family]}): {pre_steps} steps of {pre_per_step:.3f} s",
        flush=True,
    )
    pretrain = fit(
        args, family, config, pre_train, pre_val, root / "pretrain", pre_recipe, pre_steps, precision
    )
    options = data_options(args, direction=FINETUNE_DIRECTION[family])
    data = {arm: build_data(args, family, config, root / arm, ft_recipe.batch_size, None, options)
            for arm in ("scratch", "pretrained")}  # fmt: skip
    # one step count for both arms: the steps the budget buys (a step costs the same with either start)
    ft_steps, ft_per_step = budget_steps(
        args, probe, *data["scratch"], ft_recipe, args.finetune_minutes, root, precision
    )
    print(
        f"{family} fine-tuning ({FINETUNE_DIRECTION[family]}): {ft_steps} steps of {ft_per_step:.3f} s per arm",
        flush=True,
    )
    arms: dict[str, Any] = {}
    for arm, init in (("scratch", None), ("pretrained", root / "pretrain" / "best")):
        arms[arm] = fit(
            args, family, config, *data[arm], root / arm, ft_recipe, ft_steps, precision, init=init
        )
        arms[arm]["test2016"] = finetuned_bleu(args, root / arm / "best", f"{family} {arm}")
    plot_curves({f"{family} {arm}": r["curve"] for arm, r in arms.items()}, figures(args, work) / f"seq2seq_pretrain_{family}.png",
                f"{family}: fine-tuning val loss, pretrained vs scratch ({ft_steps} steps each)")  # fmt: skip
    checks = [
        row["equals_sacrebleu"] for r in arms.values() for d in r["test2016"].values() for row in d.values()
    ]
    gain = {d: round(arms["pretrained"]["test2016"][d]["beam4"]["bleu"] - arms["scratch"]["test2016"][d]["beam4"]["bleu"], 2)
            for d in arms["scratch"]["test2016"]}  # fmt: skip
    print(f"{family}: pretraining changes beam-4 test BLEU by {gain}", flush=True)
    return {
        "pretrain": pretrain, "pretrain_objective": PRETRAIN_DATA[family], "pretrain_minutes": args.pretrain_minutes,
        "finetune_steps": ft_steps, "finetune_minutes": args.finetune_minutes, "seconds_per_finetune_step": round(ft_per_step, 4),
        "finetune_direction": FINETUNE_DIRECTION[family], "arms": arms, "pretraining_bleu_gain_beam4": gain,
        "model_config": config.to_dict(), "precision": precision, "bleu_equals_sacrebleu": all(checks),
    }  # fmt: skip


def section_pretrain_t5(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return pretrain_section(args, work, "t5")


def section_pretrain_bart(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return pretrain_section(args, work, "bart")


# --- speed: beam 4, ours against transformers' generate -------------------------------------------------------


def speed_model(args: argparse.Namespace, work: Path, family: str) -> tuple[Any, Any, str]:
    """The pretrained arm's fine-tuned model when that section ran, else the untrained preset (outputs run long)."""
    trained = work / f"pretrain_{family}" / "pretrained" / "best"
    if trained.is_dir():
        tr = load_translator(trained)
        return tr.model, tr.tokenizer, str(trained)
    config = model_config(args, family)
    return build_model(args, family, config).eval(), family_tokenizer(args, family, config), "untrained"


def hf_twin(model: Any, family: str, folder: Path) -> Any:
    """transformers' model loaded from our Hugging Face export of ``model``."""
    import transformers

    module = importlib.import_module(f"glassformer.models.{family}.hf")
    module.save_pretrained(model, folder)
    cls = {"t5": transformers.T5ForConditionalGeneration, "bart": transformers.BartForConditionalGeneration}[
        family
    ]
    return cls.from_pretrained(folder).eval()


def timed_translations(
    run: Callable[[list[int]], list[int]], sources: list[list[int]]
) -> tuple[list[list[int]], float]:
    """Each source translated alone (after one warm-up call); outputs and total seconds."""
    run(sources[0])
    start = time.perf_counter()
    outputs = [run(ids) for ids in sources]
    return outputs, time.perf_counter() - start


def unpadded(row: list[int], pad: int) -> list[int]:
    """``row`` without the pad tokens that fill it after its end."""
    end = len(row)
    while end and row[end - 1] == pad:
        end -= 1
    return row[:end]


def speed_one(args: argparse.Namespace, work: Path, family: str) -> dict[str, Any]:
    from glassformer.generate import generate
    from glassformer.translation.translate import encode_sources, source_prefix

    model, tokenizer, weights = speed_model(args, work, family)
    hf = hf_twin(
        model, family, work / "speed" / f"{family}-hf"
    )  # exported before our kernels touch the model
    pairs = load_pairs("test", "en-de", limit=args.speed_sentences)
    sources = encode_sources(model, tokenizer, [s for s, _ in pairs], source_prefix(model, "en-de"))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    limit = 16 if args.quick else None

    def budget(ids: list[int]) -> int:
        return limit or min(model.max_seq_len, 2 * len(ids) + 10)

    def ours(ids: list[int]) -> list[int]:
        out = generate(model, [ids], strategy="beam", num_beams=4, length_penalty=1.0, max_new_tokens=budget(ids),
                       stop_token_ids=(eos,), pad_token_id=pad)  # fmt: skip
        return [int(t) for t in out.tokens[0]]

    def theirs(ids: list[int]) -> list[int]:
        with torch.no_grad():
            seq = hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              num_beams=4, length_penalty=1.0, max_new_tokens=budget(ids), eos_token_id=eos,
                              pad_token_id=pad, do_sample=False, early_stopping=False)  # fmt: skip
        return [int(t) for t in seq[0, 1:]]  # after the decoder's start token

    ours_out, ours_s = timed_translations(ours, sources)
    theirs_out, theirs_s = timed_translations(theirs, sources)
    same = [unpadded(a, pad) == unpadded(b, pad) for a, b in zip(ours_out, theirs_out)]
    mismatches = [{"source": pairs[i][0], "ours": tokenizer.decode(ours_out[i], skip_special_tokens=True),
                   "transformers": tokenizer.decode(theirs_out[i], skip_special_tokens=True)}
                  for i, ok in enumerate(same) if not ok][:3]  # fmt: skip
    row = {"sentences": len(sources), "ours_sentences_per_s": round(len(sources) / ours_s, 2),
           "transformers_sentences_per_s": round(len(sources) / theirs_s, 2), "ours_seconds": round(ours_s, 3),
           "transformers_seconds": round(theirs_s, 3), "speedup": round(theirs_s / ours_s, 3),
           "outputs_identical": all(same), "identical_count": sum(same), "mismatches": mismatches, "weights": weights,
           "mean_output_tokens": round(sum(map(len, ours_out)) / len(ours_out), 1)}  # fmt: skip
    print(f"speed {family}: ours {row['ours_sentences_per_s']} sentences/s, transformers {row['transformers_sentences_per_s']}"
          f" -> {row['speedup']}x; identical {sum(same)}/{len(same)}", flush=True)  # fmt: skip
    return row


def section_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import transformers

    transformers.logging.set_verbosity_error()
    rows = {family: speed_one(args, work, family) for family in ("t5", "bart")}
    ours_s = sum(r["ours_seconds"] for r in rows.values())
    theirs_s = sum(r["transformers_seconds"] for r in rows.values())
    identical = all(r["outputs_identical"] for r in rows.values())
    return {"beam_speedup_vs_transformers": round(theirs_s / ours_s, 3), "outputs_identical": identical,
            "models": rows, "num_beams": 4, "length_penalty": 1.0, "batch_size": 1, "threads": torch.get_num_threads(),
            "transformers": transformers.__version__,
            "failures": [] if identical else [f"speed: {f} outputs differ from transformers'" for f, r in rows.items()
                                              if not r["outputs_identical"]]}  # fmt: skip


# --- pictures ----------------------------------------------------------------------------------------------


def section_pictures(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """A test sentence translated by the en_de section's model (its beam and length penalty), and the
    cross-attention alignment of the translation: the last decoder layer's mean, and each head."""
    from glassformer.viz.alignment import plot_alignment, translation_attention

    stored = work / "sections" / "en_de.json"
    if not stored.is_file():
        raise SystemExit("the pictures section draws the en_de model: run --sections en_de first")
    en_de = json.loads(stored.read_text())
    folder = Path(en_de["chosen_folder"])
    tr = load_translator(folder)
    index = 0 if args.quick else 2  # a test sentence short enough for a readable picture
    source, reference = load_pairs("test", "en-de", limit=index + 1)[index]
    attention = translation_attention(tr.model, tr.tokenizer, source, direction="en-de", directions=tr.directions,
                                      num_beams=args.beam, length_penalty=en_de["length_penalty"],
                                      max_new_tokens=16 if args.quick else None)  # fmt: skip
    out = figures(args, work)
    mean = plot_alignment(
        attention, out / "seq2seq_alignment.png", title=f"{source}\n-> {attention.translation}"
    )
    heads = plot_alignment(attention, out / "seq2seq_alignment_heads.png", per_head=True)
    print(f"pictures: {source!r} -> {attention.translation!r}; {mean}", flush=True)
    return {
        "example": {"source": source, "translation": attention.translation, "reference": reference},
        "model": str(folder), "alignment_picture": shown_path(mean), "alignment_heads_picture": shown_path(heads),
        "source_tokens": attention.source_tokens, "target_tokens": attention.target_tokens,
    }  # fmt: skip


def shown_path(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)


# --- figures, storage, main ----------------------------------------------------------------------------------


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, curve in curves.items():
        if curve:
            steps, losses = zip(*curve)
            ax.plot(steps, losses, marker="o", ms=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation loss\n(label-smoothed where the model smooths)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def figures(args: argparse.Namespace, work: Path) -> Path:
    """Where pictures go: bench/results, or the work folder for --quick (whose numbers mean nothing)."""
    return work if args.quick else RESULTS


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "bleu_check": section_bleu_check, "en_de": section_en_de, "de_en": section_de_en,
    "pretrain_t5": section_pretrain_t5, "pretrain_bart": section_pretrain_bart, "speed": section_speed,
    "pictures": section_pictures,
}  # fmt: skip


def headline(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The results file's top-level keys, from whichever sections have run (None where one has not)."""
    checks = [r["bleu_equals_sacrebleu"] for r in sections.values() if "bleu_equals_sacrebleu" in r]
    return {
        "test2016_bleu_en_de": sections.get("en_de", {}).get("test2016_bleu"),
        "test2016_bleu_de_en": sections.get("de_en", {}).get("test2016_bleu"),
        "bleu_equals_sacrebleu": all(checks) if checks else None,
        "train_minutes_en_de": sections.get("en_de", {}).get("train_minutes"),
        "beam_speedup_vs_transformers": sections.get("speed", {}).get("beam_speedup_vs_transformers"),
    }


def run_sections(args: argparse.Namespace, work: Path) -> dict[str, dict[str, Any]]:
    """Run the asked sections not stored yet (or in --redo); return every stored section."""
    stored = work / "sections"
    stored.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        path = stored / f"{name}.json"
        if path.is_file() and name not in args.redo:
            print(f"[{name}] done before; skipped (--redo {name} to run it again)", flush=True)
            continue
        print(f"[{name}] running", flush=True)
        before, start = describe(), time.perf_counter()
        record = SECTIONS[name](args, work)
        record.update(
            seconds=round(time.perf_counter() - start, 1), machine_before=before, machine_after=describe()
        )
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return {
        name: json.loads((stored / f"{name}.json").read_text())
        for name in SECTIONS
        if (stored / f"{name}.json").is_file()
    }


def sections_list(text: str) -> list[str]:
    names = [s for s in (part.strip() for part in text.split(",")) if s]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {unknown}; the sections are {', '.join(SECTIONS)}"
        )
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument(
        "--sections", type=sections_list, default=list(SECTIONS), help="comma-separated; default all"
    )
    p.add_argument("--redo", type=sections_list, default=[], help="sections to run again although stored")
    p.add_argument(
        "--quick", action="store_true", help="tiny twins, a few hundred pairs, seconds per section"
    )
    p.add_argument(
        "--work-dir", default=None, help="runs and stored sections (default out/bench_seq2seq[_quick])"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--minutes", type=float, default=90.0, help="wall-time budget of the en->de Transformer's training"
    )
    p.add_argument("--minutes-de-en", type=float, default=45.0)
    p.add_argument(
        "--transformer", type=parse_overrides, default={}, help="TransformerConfig overrides, KEY=VALUE,..."
    )
    p.add_argument("--batch-size", type=int, default=128, help="sentence pairs per optimizer step")
    p.add_argument(
        "--lr", type=float, default=2e-3, help="the Transformer's peak learning rate (end of warmup)"
    )
    p.add_argument("--warmup", type=int, default=2000, help="inverse-square-root warmup steps")
    p.add_argument(
        "--average", type=int, default=5, help="checkpoints averaged (the last ones, 1/40 of the run apart)"
    )
    p.add_argument(
        "--lp-grid", type=lambda s: [float(x) for x in s.split(",")], default=[0.6, 0.8, 1.0, 1.2, 1.4]
    )
    p.add_argument(
        "--beam",
        type=int,
        default=4,
        help="beams of the headline test score (beam 4 and 5 are both in the table)",
    )
    p.add_argument("--precision", choices=("measure", "fp32", "bf16"), default="measure")
    p.add_argument("--pretrain-minutes", type=float, default=15.0, help="T5/BART pretraining budget")
    p.add_argument(
        "--finetune-minutes",
        type=float,
        default=12.0,
        help="budget of each fine-tuning arm (same steps for both)",
    )
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--finetune-lr", type=float, default=7e-4)
    p.add_argument(
        "--decode-batch", type=int, default=64, help="sentences decoded together when scoring BLEU"
    )
    p.add_argument("--speed-sentences", type=int, default=100)
    args = p.parse_args(argv)
    if args.quick:
        args.minutes = args.minutes_de_en = args.pretrain_minutes = args.finetune_minutes = 0.03
        args.lp_grid, args.speed_sentences, args.warmup, args.average, args.batch_size = (
            [0.6, 1.0],
            4,
            10,
            2,
            16,
        )
    args.work_dir = Path(
        args.work_dir or ROOT / "out" / ("bench_seq2seq_quick" if args.quick else "bench_seq2seq")
    )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if data_file("multi30k", "task1", "raw", "train.en.gz") is None:
        print(
            "Multi30k is not in the shared data (multi30k/task1/raw under GLASSFORMER_DATA or ../shared/data)",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Multi30k .* dropped")  # long pairs, counted by the builders
    work = args.work_dir
    sections = run_sections(args, work)
    path = work / "seq2seq_quick.json" if args.quick else RESULTS / "seq2seq.json"
    settings = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("sections", "redo")
    }
    results = {**headline(sections), "sections": sections, "settings": settings,
               "machine_before": next(iter(sections.values()))["machine_before"] if sections else None,
               "machine_after": describe()}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps(headline(sections), indent=2))
    print(f"wrote {path}")
    failures = [f for r in sections.values() for f in r.get("failures", [])]
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
