"""What the training engine costs per step, against a bare PyTorch loop (the anchor).

The model is the ``pydoc-char`` GPT preset (4 layers, width 128, 0.8M parameters) on random token
batches of shape ``(batch, block_size)``. The anchor is the loop every tutorial writes: forward,
backward, clip, AdamW step, zero grad. glassformer's ``Trainer`` adds the learning-rate schedule,
the loss/non-finite/stop all-reduce with its one sync per step, logging, EMA off, and its set-up
and final checkpoint. To time only the per-step part, each side runs ``short`` and ``long`` steps
and the marginal cost ``(t_long - t_short) / (long - short)`` is reported; set-up, compile-free
warm-up and the final checkpoint cancel out. Runs alternate and the median of ``--repeats`` is
taken, because other processes share this machine; both sides run on one intra-op thread
(``--threads``), since spinning OpenMP threads on a busy 2-core machine swamp the difference.

Run: ``.venv/bin/python bench/train_overhead.py`` (a minute or two on 2 CPU cores). The result goes
to ``bench/results/train_overhead.json`` with ``glassformer.utils.machine.describe()``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from glassformer import registry
from glassformer.train import TrainConfig, Trainer, build_optimizer
from glassformer.utils.machine import describe


def make_batch(config, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, config.vocab_size, (batch, config.max_seq_len + 1), generator=generator)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}


def bare_loop(model, config, steps: int, batch: int) -> float:
    train_cfg = TrainConfig(lr=1e-3)
    opt = build_optimizer(model, train_cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(**make_batch(config, batch, g))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def engine(model, config, steps: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        train_cfg = TrainConfig(out_dir=out, max_steps=steps, lr=1e-3, batch_size=batch, log_interval=10,
                                eval_interval=0, save_interval=10_000, progress=False, plot=False)

        def get_batch(split, step, generator):
            return make_batch(config, batch, generator)

        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # the end-of-run summary, printed per run
            Trainer(model, train_cfg, get_batch).fit()
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="pydoc-char")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--short", type=int, default=4)
    p.add_argument("--long", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_overhead.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    preset = registry.get(args.preset)
    config = preset.make_config()
    times: dict[str, list[float]] = {"bare": [], "engine": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare_loop), ("engine", engine)):
            per = []
            for steps in (args.short, args.long):
                torch.manual_seed(0)
                per.append(fn(preset.build(config), config, steps, args.batch))
            times[name].append((per[1] - per[0]) / (args.long - args.short))
    bare, ours = statistics.median(times["bare"]), statistics.median(times["engine"])
    tokens = args.batch * config.max_seq_len
    result = {
        "benchmark": "train_overhead",
        "preset": args.preset,
        "batch": [args.batch, config.max_seq_len],
        "threads": args.threads,
        "seconds_per_step": {"bare_loop": bare, "glassformer_trainer": ours},
        "tokens_per_second": {"bare_loop": tokens / bare, "glassformer_trainer": tokens / ours},
        "ratio_trainer_over_bare": ours / bare,
        "all_runs": times,
        "machine": describe(),
    }
    print(f"{args.preset}, batch {args.batch}x{config.max_seq_len}: bare loop {bare * 1e3:.1f} ms/step, "
          f"Trainer {ours * 1e3:.1f} ms/step, ratio {ours / bare:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
