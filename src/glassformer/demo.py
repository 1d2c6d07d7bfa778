"""``glassformer demo``: the tour behind ``make demo``.

1. Prepare character-level data: Tiny Shakespeare when the shared data has it, else Python's own
   help text (always available, no download).
2. Train a small GPT through the training engine for about two minutes, with a progress bar.
3. Sample from it with each decoding strategy and print the samples.
4. Save the loss curve and the per-head attention heatmaps (PNG + interactive HTML) of a sample.

Everything lands in ``--out`` (default ``out/demo``). The pieces are ordinary library calls, so
this file doubles as an example of using glassformer from Python.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from glassformer.utils.commands import AddParser

STRATEGIES: dict[str, dict[str, object]] = {
    "greedy": {"strategy": "greedy"},
    "temperature 0.8": {"strategy": "sample", "temperature": 0.8},
    "top-k 10": {"strategy": "sample", "top_k": 10},
    "top-p 0.9": {"strategy": "sample", "top_p": 0.9, "temperature": 0.9},
    "beam 4": {"strategy": "beam", "num_beams": 4, "length_penalty": 1.0},
}


def register(add_parser: AddParser) -> None:
    p = add_parser("demo", help="the tour: train a small GPT, sample with every strategy, draw attention")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000, about 2 minutes)")
    p.add_argument("--preset", default="shakespeare-char-rope", help="GPT preset to train")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glassformer.data import default_corpus, prepare
    from glassformer.generate import GenerationConfig, generate
    from glassformer.registry import get
    from glassformer.train import TrainConfig, Trainer
    from glassformer.viz.attention import model_attention, plot_attention_heads, write_head_view_html

    out: Path = args.out
    if (out / "train").exists():
        shutil.rmtree(out / "train")  # a demo always starts fresh
    out.mkdir(parents=True, exist_ok=True)

    # 1. data
    _, corpus = default_corpus()
    print(f"[1/4] data: {corpus}, character level")
    data = prepare(None, "char", out / "data", progress=False)
    tokenizer = data.tokenizer()

    # 2. model and training
    preset = get(args.preset)
    model_config = preset.make_config().replace(vocab_size=data.vocab_size)
    torch.manual_seed(1337)
    model = preset.build(model_config)
    print(f"[2/4] training {args.preset} ({model.num_parameters() / 1e6:.2f}M parameters) for {args.steps} steps")
    train_config = TrainConfig(
        out_dir=str(out / "train"), max_steps=args.steps, batch_size=12, lr=2e-3, warmup_steps=100,
        min_lr_ratio=0.1, betas=(0.9, 0.99), eval_interval=max(1, args.steps // 4), eval_batches=20,
        save_interval=args.steps, keep_last=1, log_interval=10,
    )  # fmt: skip
    batches = data.batch_fn(train_config.batch_size, model_config.max_seq_len)
    start = time.perf_counter()
    Trainer(model, train_config, batches, batches).fit()  # prints its own one-screen summary
    print(f"      trained in {time.perf_counter() - start:.0f} s; loss curve: {out / 'train' / 'curves.png'}")
    model.save(out / "model")
    tokenizer.save(out / "model")

    # 3. samples with each strategy
    prompt = "ROMEO:\n" if "shakespeare" in corpus.lower() else "The "
    # samples run past the model's short context: the window slides (GenerationConfig.slide_window)
    max_new = args.max_new_tokens
    print(f"[3/4] {max_new} characters after the prompt {prompt!r} (context {model_config.max_seq_len}, sliding)")
    samples = []
    for name, options in STRATEGIES.items():
        config = GenerationConfig(max_new_tokens=max_new, seed=0, slide_window=True, **options)
        text = generate(model, prompt, config=config, tokenizer=tokenizer).texts[0]
        samples.append(f"--- {name} ---\n{prompt}{text}\n")
        print(samples[-1])
    (out / "samples.txt").write_text("\n".join(samples), encoding="utf-8")

    # 4. attention pictures of a sample
    sample = (prompt + generate(model, prompt, config=GenerationConfig(max_new_tokens=40, strategy="greedy"),
                                tokenizer=tokenizer).texts[0])[:48]  # fmt: skip
    attentions, tokens = model_attention(model, tokenizer, sample)
    png = plot_attention_heads(attentions, tokens, out / "attention_heads.png", title=f"{args.preset}: {sample!r}")
    html = write_head_view_html(attentions, tokens, out / "head_view.html")
    print(f"[4/4] attention heatmaps: {png}\n      interactive head view: {html}")
    print(f"done: everything is in {out}/")
    return 0
