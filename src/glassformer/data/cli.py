"""``glassformer data prepare``: turn a text file into token files for training a language model."""

from __future__ import annotations

import argparse
from pathlib import Path

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser("data", help="prepare token files (train.bin/val.bin) for causal language models")
    verbs = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = verbs.add_parser(
        "prepare",
        help="tokenize a text file (default: Tiny Shakespeare, else Python's own help text)",
        description="Split the text 90/10, build a character or BPE tokenizer and write train.bin, val.bin, "
        "meta.json and the tokenizer files into --out.",
    )
    prep.add_argument("file", nargs="?", help="UTF-8 text file, or 'embedded' (default: Tiny Shakespeare if present)")
    prep.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="char (default) or bpe")
    prep.add_argument("--out", type=Path, required=True, help="output folder")
    prep.add_argument("--vocab-size", type=int, help="BPE vocabulary to learn (default 1024)")
    prep.add_argument("--val-fraction", type=float, default=0.1, help="end of the text kept for validation")
    prep.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from glassformer.data.prepare import prepare

    data = prepare(args.file, args.tokenizer, args.out, vocab_size=args.vocab_size, val_fraction=args.val_fraction)
    m = data.meta
    print(f"{m['source']}: {m['characters']:,} characters -> {m['train_tokens']:,} train + {m['val_tokens']:,} val "
          f"tokens ({m['tokenizer']}, vocab {m['vocab_size']}, {m['dtype']}) in {args.out}")
    return 0
