"""``glassformer translate CHECKPOINT "text"``: a thin verb over ``glassformer.translation``.

::

    glassformer translate out/t5-multi30k/best "A man is riding a bike." [--beam 4] [--direction en-de]
    cat sentences.en | glassformer translate out/transformer/best          # one translation per line
    glassformer translate out/bart-multi30k/best --bleu test               # corpus BLEU on test2016
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "translate",
        help="translate sentences with an encoder-decoder checkpoint (beam search), or score it with BLEU",
        description=(__doc__ or "").replace("``", "`").replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a model folder: out/<run>/best or a checkpoints/step-* folder")
    p.add_argument("text", nargs="*", help="sentences to translate (none, or '-': one per line from stdin)")
    p.add_argument("--direction", default=None,
                   help="en-de or de-en (default: the first the run learned, else en-de)")  # fmt: skip
    p.add_argument("--strategy", choices=("beam", "greedy"), default="beam")
    p.add_argument("--beam", type=int, default=4, help="beams for --strategy beam (default 4)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam scores are divided by length**this")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: twice the source plus 10")
    p.add_argument("--bleu", metavar="SPLIT", choices=("val", "test"), default=None,
                   help="instead of translating TEXT, score the Multi30k split with corpus BLEU (13a)")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="with --bleu: only the split's first N sentences")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace, learned: tuple[str, ...]) -> dict[str, Any]:
    direction = args.direction or (learned[0] if learned else "en-de")
    return {"direction": direction, "strategy": args.strategy, "num_beams": args.beam,
            "length_penalty": args.length_penalty, "max_new_tokens": args.max_new_tokens}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from glassformer.translation import load_translator, score_bleu, translate

    translator = load_translator(args.checkpoint)
    if args.bleu:
        report = score_bleu(translator.model, translator.tokenizer, split=args.bleu, limit=args.limit,
                            directions=translator.directions, **_options(args, translator.directions))  # fmt: skip
        print(report)
        return 0
    lines = args.text if args.text and args.text != ["-"] else sys.stdin.read().splitlines()
    wanted = [line for line in lines if line.strip()]
    if not wanted:
        raise ValueError("nothing to translate: give TEXT or lines on stdin")
    done = iter(translate(translator.model, translator.tokenizer, wanted, directions=translator.directions, **_options(args, translator.directions)))
    for line in lines:  # blank lines stay blank, so the output lines up with the input
        print(next(done) if line.strip() else "")
    return 0
