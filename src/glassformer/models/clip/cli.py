"""``glassformer retrieve CHECKPOINT``: search pictures by text, or captions by picture, with a CLIP model.

    glassformer retrieve out/clip-shapes/best --images pictures/ "a red circle left of a star" \
        [--k 8] [--out retrieval.png] [--similarity sim.png] [--rollout rollout.png] [--cache-dir DIR]
    glassformer retrieve out/clip-shapes/best --text captions.txt picture.png [more.png ...] [--k 5]

The folder's image features are computed once and cached (see ``glassformer.models.clip.retrieval``).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from glassformer.utils.commands import AddParser

if TYPE_CHECKING:
    from glassformer.models.clip.retrieval import ClipCheckpoint, ImageToText, TextToImage


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "retrieve",
        help="CLIP retrieval: the pictures of a folder that match a text, or the lines of a file that match a picture",
        description="Text -> image: rank the pictures of --images DIR against each text query and write a "
        "top-k grid (cosine under each picture). Image -> text: rank the lines of --text FILE against each "
        "picture. A folder's image features are cached in DIR/.glassformer-clip-cache (or --cache-dir) and "
        "recomputed only for files that were added or changed, or when the checkpoint changed.",
    )
    p.add_argument(
        "checkpoint", help="a CLIP model folder: out/<run>/best, a checkpoint, or a Hugging Face CLIPModel"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="QUERY_OR_IMAGE",
        help="with --images: text queries (quote each); with --text: picture files",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--images", metavar="DIR", help="text -> image: the folder of pictures to search")
    mode.add_argument(
        "--text", metavar="FILE", help="image -> text: a file with one candidate caption per line"
    )
    p.add_argument(
        "--k", type=int, default=None, help="how many answers per query (default 8 images, 5 lines)"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="PNG",
        help="text -> image: where to write the top-k grid (default retrieval.png)",
    )
    p.add_argument(
        "--similarity", default=None, metavar="PNG", help="also write the images x captions cosine matrix"
    )
    p.add_argument(
        "--rollout",
        default=None,
        metavar="PNG",
        help="also write the image tower's attention rollout over the pictures found for the first query",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="keep the folder's features here instead of DIR/.glassformer-clip-cache",
    )
    p.add_argument("--batch-size", type=int, default=64, help="pictures per image-tower pass (default 64)")
    p.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from glassformer.models.clip import retrieval

    if args.text and args.out:
        raise ValueError("--out writes the text -> image grid; with --text use --similarity or --rollout")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ckpt = retrieval.open_checkpoint(args.checkpoint)
            result = _text_to_image(ckpt, args) if args.images else _image_to_text(ckpt, args)
            for flag, draw in (
                (args.similarity, retrieval.save_similarity),
                (args.rollout, retrieval.save_rollout),
            ):
                if flag:
                    print(f"wrote {draw(ckpt, result, flag)}", file=sys.stderr)
        finally:
            for warning in caught:
                print(f"glassformer retrieve: warning: {warning.message}", file=sys.stderr)
    return 0


def _text_to_image(ckpt: ClipCheckpoint, args: argparse.Namespace) -> TextToImage:
    from glassformer.models.clip import retrieval

    result = retrieval.text_to_image(ckpt, args.images, args.inputs, k=args.k or 8, cache_dir=args.cache_dir,
                                     batch_size=args.batch_size)  # fmt: skip
    images = result.images
    where = f"cached in {images.cache}" if images.cache else "not cached"
    print(f"{len(images.paths)} images: {images.encoded} encoded now, {len(images.paths) - images.encoded} "
          f"from the cache ({where})", file=sys.stderr)  # fmt: skip
    for query, found in zip(result.queries, result.matches, strict=True):
        print(f'"{query}"')
        for m in found:
            print(f"  {m.rank:3d}  {m.score:7.4f}  {Path(args.images) / m.item.name}")  # type: ignore[union-attr]
    print(f"wrote {retrieval.save_grid(ckpt, result, args.out or 'retrieval.png')}", file=sys.stderr)
    return result


def _image_to_text(ckpt: ClipCheckpoint, args: argparse.Namespace) -> ImageToText:
    from glassformer.models.clip import retrieval

    result = retrieval.image_to_text(ckpt, args.inputs, retrieval.read_lines(args.text), k=args.k or 5)
    for path, found in zip(result.images, result.matches, strict=True):
        print(path)
        for m in found:
            print(f"  {m.rank:3d}  {m.score:7.4f}  {m.item}")
    return result
