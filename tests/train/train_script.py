"""Run a tiny training job; started as a subprocess (and under torchrun) by the engine tests.

    python train_script.py OUT_DIR [--resume] [--max-steps N] [--batch-size B] [--accum K]
                           [--dropout P] [--signal-at STEP:SIGNAME] [--kill-in-save STEP]
                           [--dump-weights FILE]

``--signal-at 7:SIGKILL`` makes the process send itself that signal in the middle of step 7 (in
the forward pass of its second micro-batch), a moment no checkpoint covers. ``--kill-in-save 4``
SIGKILLs the process half-way through writing the training state of the step-4 checkpoint.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny  # noqa: E402

from glassformer.train import TrainConfig, Trainer  # noqa: E402
from glassformer.utils.weights import save_model_weights  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--accum", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--signal-at", default=None)
    p.add_argument("--kill-in-save", type=int, default=None)
    p.add_argument("--dump-weights", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)

    model = tiny.build(dropout=args.dropout)
    if args.signal_at:
        at_step, name = args.signal_at.split(":")
        calls = {"n": 0}
        forward = model.forward

        def forward_with_signal(*a, **kw):
            if model.training:  # training forwards count micro-batches: step s, micro-batch 2 is
                calls["n"] += 1  # call (s - 1) * accum + 2
                if calls["n"] == (int(at_step) - 1) * args.accum + 2:
                    os.kill(os.getpid(), getattr(signal, name))
            return forward(*a, **kw)

        model.forward = forward_with_signal  # type: ignore[method-assign]
    if args.kill_in_save is not None:
        real_save = torch.save

        def save_then_die(obj, f, *a, **kw):
            if isinstance(obj, dict) and obj.get("step") == args.kill_in_save:
                with open(f, "wb") as handle:  # half a file, then the process dies
                    handle.write(b"PK\x03\x04 half a training state")
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **kw)

        torch.save = save_then_die
    config = TrainConfig(
        out_dir=args.out_dir, max_steps=args.max_steps, batch_size=args.batch_size, grad_accum_steps=args.accum,
        lr=3e-3, warmup_steps=2, schedule="cosine", save_interval=2, keep_last=2, log_interval=1,
        eval_interval=4, eval_batches=2, progress=False, plot=False, ema_decay=0.9,
    )
    data = tiny.make_dataset(n=48)
    summary = Trainer(model, config, data, tiny.make_dataset(n=16, seed=1)).fit(resume=args.resume)
    if args.dump_weights:
        rank = int(os.environ.get("RANK", "0"))
        save_model_weights(model, __import__("pathlib").Path(args.dump_weights.format(rank=rank)))
    if summary.stop_reason.startswith("signal:"):
        return 128 + int(signal.Signals[summary.stop_reason.split(":")[1]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
