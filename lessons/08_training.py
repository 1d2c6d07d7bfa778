"""Lesson 08: training with glassformer's engine: warmup + cosine, gradient clipping, checkpoint, stop and resume.

Run:  python lessons/08_training.py [--out DIR] [--quick]

Lesson 07 trained its translator with a dozen lines of loop. Real runs need more than that loop,
and ``glassformer.train`` (one ``Trainer`` for every family) adds it; this lesson opens it up on
two models, a Transformer translating English into German and a GPT reading characters:

1. **the learning-rate schedule**: a linear **warmup** (Adam's second-moment estimates are noise
   in the first steps, and a full-size step then can wreck a post-norm Transformer), then a
   **cosine** decay to a floor; a pure function of the step, so a resumed run recomputes it;
2. **gradient clipping**: when the global norm ``sqrt(sum ||g||^2)`` of all gradients exceeds
   ``c``, every gradient is scaled by ``c / norm``: the direction is kept, one unlucky batch
   cannot throw the weights far;
3. **checkpoint, stop and resume**: a run stopped by a signal (Ctrl-C, a scheduler's SIGTERM)
   finishes its step, saves weights, optimizer moments, the data position and every RNG state,
   and a resumed run then computes *bitwise* the same losses as one never interrupted.

Each is done by hand and checked against the engine. Without the shared Multi30k data the
translator learns a generated task; the GPT reads Tiny Shakespeare, else Python's own help text.
``--quick`` runs 40 steps per model; without it, a few hundred.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from _lesson import check, parse_args, save, section, show
from _translation import translation_data
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from glassformer.data.prepare import default_corpus
from glassformer.models.gpt import GPT, GPTConfig
from glassformer.models.transformer import Transformer, TransformerConfig
from glassformer.models.transformer.data import transformer_batch
from glassformer.train import TrainConfig, Trainer, make_schedule, seed_everything
from glassformer.train.data import batch_generator

args = parse_args("08", __doc__)
STEPS = 40 if args.quick else 400
scratch = tempfile.TemporaryDirectory(prefix="lesson08-")  # removed when the lesson ends
runs = Path(scratch.name)  # the engine's out_dirs: checkpoints, logs

# --- the two models and their data: get_batch(split, step, generator) -> keyword arguments ----------
mt_config = TransformerConfig(vocab_size=1024, tgt_vocab_size=1024, dim=64, n_heads=4, n_layers=2,
                              n_decoder_layers=2, ffn_dim=256, dropout=0.1, max_seq_len=96)  # fmt: skip
pairs = translation_data(mt_config, 1_000 if args.quick else 10_000, 1)
print(f"translation: {pairs.name}, {len(pairs.train)} pairs")


def translation_batch(split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
    """16 pairs drawn with the engine's generator (seeded by the step): resumable by construction."""
    rows = torch.randint(len(pairs.train), (16,), generator=generator).tolist()
    return transformer_batch([pairs.train[i] for i in rows], mt_config)


text, corpus = default_corpus()
chars = sorted(set(text))
ids = torch.tensor([chars.index(c) for c in text[:200_000]])  # one id per character
lm_config = GPTConfig(
    vocab_size=len(chars), max_seq_len=64, n_layers=2, n_heads=4, dim=64, dropout=0.0, bias=False
)
print(f"language model: {len(chars)} characters of {Path(corpus).name}")


def lm_batch(split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
    """16 windows of 64 characters; the targets are the same windows one character on."""
    start = torch.randint(len(ids) - 65, (16,), generator=generator)
    window = torch.stack([ids[s : s + 65] for s in start.tolist()])  # (16, 65)
    return {"input_ids": window[:, :-1], "targets": window[:, 1:]}


def build(kind: str) -> nn.Module:
    """The model of ``kind``, initialised from the same seed every time (runs that must agree start equal)."""
    seed_everything(0)
    return Transformer(mt_config) if kind == "translation" else GPT(lm_config)


MODELS = {"translation": translation_batch, "language model": lm_batch}


def settings(name: str, **changes: Any) -> TrainConfig:
    """One run's settings: fp32 on the CPU (bitwise checks), a log record every step, no progress bar."""
    base = dict(out_dir=str(runs / name), max_steps=STEPS, batch_size=16, lr=3e-3, warmup_steps=STEPS // 4,
                schedule="cosine", min_lr_ratio=0.1, grad_clip=1.0, device="cpu", precision="fp32",
                log_interval=1, save_interval=10 * STEPS, progress=False, plot=False)  # fmt: skip
    return TrainConfig(**{**base, **changes})


def logged(out_dir: str, key: str) -> list[float]:
    """One value per training step from the engine's ``log.jsonl``."""
    lines = (Path(out_dir) / "log.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [r[key] for r in records if r.get("kind", "train") == "train" and key in r]


# ---------------------------------------------------------------------------------------------
section("1. warmup + cosine by hand")
LR, W, FLOOR = 3e-3, STEPS // 4, 0.1


def lr_by_hand(step: int, total: int) -> float:
    """Step ``step`` (0-based) of ``total``: linear warmup to LR over W steps, cosine down to FLOOR * LR."""
    if step < W:
        return LR * (step + 1) / W  # the first step already moves; the peak is reached at step W - 1
    progress = min(1.0, (step - W) / max(1, total - W))
    return LR * FLOOR + (LR - LR * FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


config = settings("schedule")
engine_schedule = make_schedule(config)
steps = range(STEPS + 10)  # a few steps past the end: the rate stays on the floor
check("warmup + cosine by hand = glassformer.train.make_schedule", [lr_by_hand(s, STEPS) for s in steps],
      [engine_schedule(s) for s in steps], atol=1e-15)  # fmt: skip
Trainer(build("translation"), config, translation_batch).fit()
check("  = the rate the engine trained the translator with, step by step (log.jsonl)",
      [lr_by_hand(s, STEPS) for s in range(STEPS)], logged(config.out_dir, "lr"), atol=1e-15)  # fmt: skip
show("first rates", torch.tensor([lr_by_hand(s, STEPS) for s in range(6)]), decimals=5)

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot([lr_by_hand(s, STEPS) for s in steps], label="by hand", lw=3, alpha=0.4)
ax.plot(logged(config.out_dir, "lr"), "k.", ms=3, label="the engine's log")
ax.axvline(W - 0.5, color="gray", ls=":", lw=1)
ax.set(xlabel="step", ylabel="learning rate", title=f"warmup ({W} steps) + cosine to {FLOOR:g} x peak")
ax.legend()
save(fig, args.out, "lr_schedule.png")

# ---------------------------------------------------------------------------------------------
section("2. gradient clipping by hand")
# One engine step on the GPT with a tight clip (0.05, far under its first gradients' norm), its
# gradients caught as they reach AdamW; then the same batch by hand, from the same initial weights.
model = build("language model")
start = copy.deepcopy(model)
caught: dict[str, Tensor] = {}
names = {id(p): n for n, p in model.named_parameters()}


def catch(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            caught[names[id(p)]] = p.grad.detach().clone()


hook = register_optimizer_step_pre_hook(catch)
try:
    config = settings("clip", max_steps=1, grad_clip=0.05)
    Trainer(model, config, lm_batch).fit()
finally:
    hook.remove()

start.train()
batch = lm_batch("train", 0, batch_generator(config.seed, "train", 0, 0))  # the engine's first batch
start(**batch).loss.backward()
grads = {n: p.grad for n, p in start.named_parameters()}
norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))  # the global norm
scale = min(1.0, config.grad_clip / (float(norm) + 1e-6))  # torch's clip_grad_norm_ adds 1e-6
print(f"global gradient norm {float(norm):.4f} > clip {config.grad_clip}: every gradient times {scale:.4f}")
check("the global norm by hand = the engine's logged grad_norm", float(norm), logged(config.out_dir, "grad_norm")[0],
      atol=1e-5)  # fmt: skip
check("clipped gradients by hand = those the engine handed AdamW", torch.cat([(g * scale).flatten() for g in
      grads.values()]), torch.cat([caught[n].flatten() for n in grads]), atol=1e-8)  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("3. checkpoint, stop and resume")
# For each model: one run never interrupted; one that receives SIGINT (as Ctrl-C sends) while
# reading its batches at step STEPS/2, saves a checkpoint and returns; then a new Trainer with the
# same settings resumes from the checkpoint. Dropout (the translator's 0.1) draws from the torch
# RNG, whose state is in the checkpoint, so even the random masks after the resume are the same.
STOP = STEPS // 2


class StopAt:
    """The model's batches, with a SIGINT sent to this process when batch ``at`` is drawn."""

    def __init__(self, get_batch: Any, at: int | None) -> None:
        self.get_batch, self.at = get_batch, at

    def __call__(self, split: str, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)  # handled by the engine: it finishes this step, then stops
        return self.get_batch(split, step, generator)


curves: dict[str, tuple[list[float], list[float]]] = {}
for kind, get_batch in MODELS.items():
    tag = kind.replace(" ", "_")
    straight = settings(f"{tag}-straight")
    straight_model = build(kind)
    Trainer(straight_model, straight, get_batch).fit()
    interrupted = settings(f"{tag}-interrupted")
    first = Trainer(build(kind), interrupted, StopAt(get_batch, at=STOP - 1)).fit()  # batch STOP-1: step STOP
    print(
        f"{kind}: stopped by {first.stop_reason} after step {first.step}, checkpoint {Path(first.checkpoint).name}"
    )
    resumed_model = build(kind)  # a fresh process would start here: new weights, then the checkpoint
    second = Trainer(resumed_model, interrupted, get_batch).fit(resume=True)
    a, b = logged(straight.out_dir, "loss"), logged(interrupted.out_dir, "loss")
    curves[kind] = (a, b)
    print(f"  losses {a[STOP - 1]:.6f} at step {STOP}, {a[-1]:.6f} at step {second.step} (both runs)")
    check(f"{kind}: stopped + resumed losses = uninterrupted, bitwise", b, a, atol=0)
    weights = [
        torch.cat([p.flatten() for p in m.state_dict().values()]) for m in (resumed_model, straight_model)
    ]
    check(f"{kind}: and the final weights, bitwise", weights[0], weights[1], atol=0)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for ax, (kind, (a, b)) in zip(axes, curves.items()):
    ax.plot(range(1, len(a) + 1), a, lw=3, alpha=0.4, label="uninterrupted")
    ax.plot(range(1, len(b) + 1), b, "k.", ms=3, label=f"stopped at step {STOP}, resumed")
    ax.axvline(STOP + 0.5, color="gray", ls=":", lw=1)
    ax.set(xlabel="step", ylabel="training loss", title=kind)
    ax.legend()
save(fig, args.out, "loss_curves.png")
