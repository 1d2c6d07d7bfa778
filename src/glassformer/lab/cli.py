"""``glassformer lab``: the web lab on this machine (attention, chat, classify, RAG, transcribe, translate,
generate images)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from glassformer.utils.commands import AddParser

TINY_ENV = "GLASSFORMER_LAB_TINY"


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "lab",
        help="open the web lab: attention explorer, chat, classifier, RAG, transcription, translation, image "
        "generation (local, offline)",
        description="Serve a Gradio lab over the library on 127.0.0.1. Models load on first use and are "
        "shared by every session; inputs are capped on the server.",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only); another exposes the lab")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help="add a model folder or .gguf to the lab's list (repeatable); users pick from the list")
    p.add_argument("--index", action="append", default=[], metavar="PATH",
                   help="a RAG index (from `glassformer rag index`) for the RAG tab (repeatable)")
    p.add_argument("--tiny", action="store_true",
                   help=f"serve tiny random models only (for tests and demos of the layout; also ${TINY_ENV}=1)")
    p.add_argument("--max-chars", type=int, default=4000, help="longest text a request may send")
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest reply the chat may generate")
    p.add_argument("--max-upload-bytes", type=int, default=1_000_000, help="largest text file an upload may be")
    p.add_argument("--max-audio-seconds", type=int, default=120, help="longest recording the transcribe tab takes")
    p.add_argument("--max-sentences", type=int, default=32, help="lines one translate request may send")
    p.add_argument("--max-unet-calls", type=int, default=20_000,
                   help="images x steps (x 2 with guidance) one generate-images request may cost")
    p.add_argument("--concurrency", type=int, default=2, help="requests the models run at once (others queue)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glassformer.lab.app import LOCAL_HOST, new_context, tiny_context
    from glassformer.lab.app import run as run_lab
    from glassformer.lab.catalog import default_catalog
    from glassformer.lab.limits import Limits

    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: give a port from 1 to 65535")
    limits = Limits(max_chars=args.max_chars, max_new_tokens=args.max_new_tokens,
                    max_upload_bytes=args.max_upload_bytes, max_audio_seconds=args.max_audio_seconds,
                    max_sentences=args.max_sentences, max_unet_calls=args.max_unet_calls, concurrency=args.concurrency)
    indexes = {}
    for path in map(Path, args.index):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such index (--index); build one with glassformer rag index")
        indexes[path.name] = path.resolve()
    if args.tiny or os.environ.get(TINY_ENV) == "1":
        ctx = tiny_context(limits, indexes)
    else:
        ctx = new_context(default_catalog(args.model), limits, indexes)
    if args.host != LOCAL_HOST:
        print(f"warning: --host {args.host} lets other machines reach the lab, which has no login; "
              f"keep the default {LOCAL_HOST} unless you mean it", file=sys.stderr)
    print(f"glassformer lab on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    run_lab(ctx, host=args.host, port=args.port)
    return 0
