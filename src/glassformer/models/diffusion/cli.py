"""``glassformer sample CHECKPOINT``: a grid of generated images from a diffusion checkpoint.

    glassformer sample out/ddpm-fashion/best --class sandal --n 16 --steps 50 --sampler ddim \
        --guidance 3 --seed 0 --out grid.png [--strip strip.png] [--gif steps.gif]

The same seed gives the same images (noise is drawn on the CPU, so on a GPU too, up to rounding).
"""

from __future__ import annotations

import argparse
import sys

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "sample",
        help="generate images with a diffusion model (DDIM or DDPM, classifier-free guidance) into a PNG grid",
        description="Sample images from a glassformer diffusion checkpoint (or a diffusers UNet2DModel folder) "
        "and write them as one PNG grid. Uses the checkpoint's EMA weights when it has them.",
    )
    p.add_argument("checkpoint", help="a model folder: out/<run>/best, a checkpoints/step-* folder, or a diffusers UNet")
    p.add_argument("--class", dest="label", default=None,
                   help="the class to draw: a name (e.g. sandal) or an id; default: unconditional")
    p.add_argument("--n", type=int, default=16, help="how many images (default 16)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: 50 for ddim, all for ddpm)")
    p.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance weight w (0: plain conditional; diffusers' scale is 1 + w)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM noise (0: deterministic, 1: DDPM-like)")
    p.add_argument("--spacing", choices=["leading", "trailing"], default="leading", help="how steps are spread")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even when ema.safetensors is present")
    p.add_argument("--scale", type=int, default=4, help="enlarge each pixel this many times in the PNG (default 4)")
    p.add_argument("--out", default="samples.png", help="the PNG to write (default samples.png)")
    p.add_argument("--strip", default=None, metavar="PNG",
                   help="also write the first image's denoising: 10 snapshots over the model's x_0 guesses")
    p.add_argument("--gif", default=None, metavar="GIF", help="also write every step of the grid as an animated GIF")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glassformer.models.diffusion.pictures import save_gif, save_grid, save_strip
    from glassformer.models.diffusion.sampling import load_for_sampling, sample

    model = load_for_sampling(args.checkpoint, ema=not args.no_ema)
    if args.guidance is not None and args.label is None and model.config.n_classes:
        raise ValueError("--guidance steers towards a class: add --class NAME (or an id), e.g. --class sandal")
    result = sample(model, args.n, steps=args.steps, sampler=args.sampler, guidance=args.guidance,
                    labels=args.label, seed=args.seed, eta=args.eta, spacing=args.spacing,
                    return_trajectory=bool(args.strip or args.gif))  # fmt: skip
    path = save_grid(result.images, args.out, scale=args.scale)
    print(f"wrote {args.n} images ({args.sampler}, {len(result.timesteps)} steps) to {path}", file=sys.stderr)
    if args.strip:
        print(f"wrote the denoising strip to {save_strip(result, args.strip, scale=args.scale)}", file=sys.stderr)
    if args.gif:
        print(f"wrote the animation to {save_gif(result, args.gif, scale=args.scale)}", file=sys.stderr)
    return 0
