"""``glassformer quantize CHECKPOINT --to int8|nf4 --out DIR``: a quantized copy of a checkpoint.

    glassformer quantize out/shakespeare --to nf4 --out out/shakespeare-nf4
    glassformer generate out/shakespeare-nf4 --prompt "ROMEO:"
"""

from __future__ import annotations

import argparse

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser("quantize", help="write an int8 / NF4 copy of a checkpoint",
                   description="Swap a model's linear layers for int8 (per output channel) or NF4 (QLoRA's "
                   "4-bit, block 64, double-quantized scales) ones and write a folder that load_model, "
                   "generate, chat and classify open directly.")  # fmt: skip
    p.add_argument("checkpoint", help="a model folder, packaged model or hub id")
    p.add_argument("--to", required=True, choices=["int8", "nf4", "fp4"], help="the weight format")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--skip", nargs="*", default=["lm_head"],
                   help="layer names or glob patterns kept in float (default: lm_head)")
    p.add_argument("--threshold", type=float, default=None,
                   help="int8 only: LLM.int8() outlier threshold on activations (the paper uses 6.0)")
    p.add_argument("--rest-dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="how the tensors left in float are stored on disk (default float32)")
    p.set_defaults(func=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from glassformer.models import load_model
    from glassformer.quant import folder_bytes, memory_bytes, quantize_model, save_quantized, size_report

    model = load_model(args.checkpoint)
    before = memory_bytes(model)
    quantize_model(model, to=args.to, skip=args.skip, threshold=args.threshold)
    save_quantized(model, args.out, rest_dtype=args.rest_dtype)
    report = size_report(model)
    print(f"quantized {len(model.quantization['layers'])} linear layers to {args.to}: memory "
          f"{before / 2**20:.2f} MiB -> {report['memory_bytes'] / 2**20:.2f} MiB, "
          f"{args.out} holds {folder_bytes(args.out) / 2**20:.2f} MiB")  # fmt: skip
    return 0
