"""Retrieval with a CLIP checkpoint: text -> image over a folder of pictures, image -> text over lines.

Both sides land in the shared space as unit-length vectors, so a search is one matrix product:
the scores are cosine similarities (the model's logits before its learned scale, so they read the
same whatever temperature a checkpoint learned) and the best ``k`` are the answer.

Image features are the costly side (one image-tower pass per picture) and a folder is searched
again and again, so its features are computed once and cached: ``features.safetensors`` (one
row per image) and ``index.json`` (for each row the file's name, size and modification time; the
folder; a key of the checkpoint) in ``DIR/.glassformer-clip-cache/`` or a ``cache_dir`` of your
choice. A later search encodes only what changed: a new file, a file whose size or time differs,
every file when the checkpoint differs (its key covers the names, sizes and times of its
``.json`` and ``.safetensors`` files); the rows of removed files are dropped.

Pictures are read as RGB and squashed to the model's square ``image_size`` (a centre crop could
cut off an object the caption names), then normalised with the checkpoint's statistics
(``preprocessor_config.json``, else the shapes set's 0.5 / 0.5).
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from glassformer.data.images import ImageDataError, normalize, read_image, resize
from glassformer.models.clip.config import CLIPConfig
from glassformer.models.clip.model import CLIP
from glassformer.tokenizers.clip import CLIPTokenizer
from glassformer.utils.progress import Progress
from glassformer.utils.weights import read_config, read_safetensors, write_json, write_safetensors
from glassformer.viz.vit import image_files, image_stats

CACHE_DIRNAME = ".glassformer-clip-cache"
FEATURES_FILE, INDEX_FILE = "features.safetensors", "index.json"
CACHE_VERSION = 1  # bump when the cached rows would differ for the same files and checkpoint
TEXT_BATCH = 256  # captions per text-tower pass


# --- the checkpoint ------------------------------------------------------------------------------


@dataclass
class ClipCheckpoint:
    """A CLIP model in eval mode with what its inputs need: tokenizer, pixel statistics, cache key."""

    model: CLIP
    tokenizer: CLIPTokenizer
    mean: tuple[float, ...]
    std: tuple[float, ...]
    key: str  # changes whenever the checkpoint's files do
    folder: Path

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision.image_size)

    def pixels(self, images: Tensor) -> Tensor:
        """uint8 pictures ``(B, C, S, S)`` as the image tower's normalised input."""
        return normalize(images.float() / 255.0, self.mean, self.std)


def checkpoint_key(folder: Path) -> str:
    """A short digest of the folder's path and its config and weights files' names, sizes and times."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    stamps = [(p.name, *_stamp(p)) for p in files]
    return hashlib.sha256(json.dumps([str(folder.resolve()), stamps]).encode()).hexdigest()[:16]


def clip_tokenizer(folder: Path, config: CLIPConfig) -> CLIPTokenizer:
    """The checkpoint's own ``tokenizer.json`` when it has one, else CLIP's BPE from the shared
    merges file; either must fit the text tower's vocabulary and its start / end-of-text ids."""
    from glassformer.tokenizers.formats import load_tokenizer

    if (folder / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(folder, CLIPTokenizer)
    else:
        tokenizer = CLIPTokenizer.from_merges_file(context_length=config.max_seq_len)
    ends = (tokenizer.bos_token_id, tokenizer.eos_token_id)
    if tokenizer.vocab_size > config.vocab_size or ends != (config.bos_token_id, config.eos_token_id):
        raise ValueError(
            f"{folder}: the text tower knows {config.vocab_size} tokens (start / end of text "
            f"{config.bos_token_id} / {config.eos_token_id}) but CLIP's tokenizer has {tokenizer.vocab_size} "
            f"({ends[0]} / {ends[1]}): the checkpoint was trained with another tokenizer (a -tiny twin's "
            "shapes-word ids, say); retrieval reads CLIP's BPE, or a CLIP tokenizer.json in the checkpoint folder"
        )
    return tokenizer


def open_checkpoint(checkpoint: str | os.PathLike[str]) -> ClipCheckpoint:
    """A CLIP checkpoint folder (glassformer's or Hugging Face's), refusing any other family by name."""
    from glassformer.models import open_folder

    folder = Path(checkpoint)
    config = read_config(folder)
    found = config.family if config.kind == "glassformer" else config.model_type
    if found != "clip":
        what = (
            found
            if config.kind == "glassformer"
            else f"Hugging Face {found or config.data.get('architectures')}"
        )
        raise ValueError(
            f"{folder} holds a {what} checkpoint; retrieval needs a clip one "
            "(train one with `glassformer train clip-shapes`)"
        )
    model = open_folder(config).eval()
    mean, std = image_stats(folder, model.config.vision.in_channels)
    return ClipCheckpoint(
        model, clip_tokenizer(folder, model.config), mean, std, checkpoint_key(folder), folder
    )


# --- pictures and captions in, unit vectors out --------------------------------------------------


def read_picture(path: Path, size: int, channels: int = 3) -> Tensor:
    """One file as uint8 ``(channels, size, size)``: converted (gray or RGBA to RGB) and squashed square."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the conversion to the model's channels is what we want here
        image = read_image(path, "L" if channels == 1 else "RGB")  # ImageDataError names a bad file
    return image if tuple(image.shape[-2:]) == (size, size) else resize(image, size)


def encode_images(
    ckpt: ClipCheckpoint, paths: Sequence[Path], *, batch_size: int = 64, progress: bool = True
) -> tuple[Tensor, list[Path], list[tuple[Path, str]]]:
    """Unit-length features ``(N, P)`` of the readable files, those files, and ``(file, why)`` of the others."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    rows: list[Tensor] = []
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    channels = ckpt.model.config.vision.in_channels
    bar = Progress(
        len(paths), desc="encode images", unit="image", enabled=progress and len(paths) > batch_size
    )
    with bar, torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            pictures = []
            for path in paths[start : start + batch_size]:
                try:
                    pictures.append(read_picture(path, ckpt.image_size, channels))
                    kept.append(path)
                except ImageDataError as err:
                    skipped.append((path, str(err)))
            if pictures:
                rows.append(ckpt.model.encode_image(ckpt.pixels(torch.stack(pictures))).float())
            bar.update(min(batch_size, len(paths) - start))
    dim = ckpt.model.config.projection_dim
    return (torch.cat(rows) if rows else torch.zeros(0, dim)), kept, skipped


def encode_texts(ckpt: ClipCheckpoint, texts: Sequence[str]) -> Tensor:
    """Unit-length features ``(M, P)``; a caption longer than the context is cut, with a warning."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(
            "give at least one caption, each a non-empty string, e.g. 'a red circle left of a star'"
        )
    length = ckpt.model.config.max_seq_len
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), TEXT_BATCH):
            batch = ckpt.tokenizer.encode_captions(texts[start : start + TEXT_BATCH], context_length=length,
                                                   padding="longest")  # fmt: skip
            rows.append(ckpt.model.encode_text(batch["input_ids"], batch["attention_mask"]).float())
    return torch.cat(rows)


def rank(queries: Tensor, keys: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best keys of each query by cosine: ``(scores, indices)``, each ``(Q, min(k, N))``, best first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return (queries @ keys.T).topk(min(k, keys.shape[0]), dim=1)


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _warn_skipped(where: object, skipped: Sequence[tuple[Path, str]]) -> None:
    if skipped:
        names = ", ".join(p.name for p, _ in skipped)
        warnings.warn(f"{where}: skipped {len(skipped)} unreadable file(s): {names}", stacklevel=3)


# --- a folder's features, cached ------------------------------------------------------------------


@dataclass
class FolderFeatures:
    """The readable images of a folder, their unit-length features ``(N, P)`` and what it took."""

    paths: list[Path]
    features: Tensor
    skipped: list[tuple[Path, str]]
    encoded: int  # images run through the image tower by this call (the rest came from the cache)
    cache: Path | None  # where the features were written (None: the cache could not be written)


def _read_cache(cache: Path, key: str, folder: Path) -> dict[str, tuple[list[int], Tensor]]:
    """File name -> (size and time, feature row) from a cache made by this checkpoint for this folder."""
    try:
        index = json.loads((cache / INDEX_FILE).read_text(encoding="utf-8"))
        features = read_safetensors(cache / FEATURES_FILE)["features"]
        files = index["files"]
        usable = (index["version"], index["checkpoint"], index["folder"]) == (CACHE_VERSION, key, str(folder))
    except (OSError, ValueError, KeyError, TypeError):  # absent, half-written or foreign: a miss
        return {}
    if not usable or not isinstance(files, list) or len(files) != features.shape[0]:
        return {}
    return {entry["name"]: (entry["stamp"], features[row]) for row, entry in enumerate(files)}


def _write_cache(cache: Path, key: str, folder: Path, paths: Sequence[Path], features: Tensor) -> Path | None:
    """Features first, index last: an index always describes rows that were written before it."""
    index = {"version": CACHE_VERSION, "checkpoint": key, "folder": str(folder),
             "files": [{"name": p.name, "stamp": _stamp(p)} for p in paths]}  # fmt: skip
    try:
        write_safetensors({"features": features}, cache / FEATURES_FILE)
        write_json(index, cache / INDEX_FILE)
    except OSError as err:
        warnings.warn(f"could not write the feature cache to {cache} ({err}); pass a writable cache_dir "
                      "(--cache-dir) to keep the features for next time", stacklevel=3)  # fmt: skip
        return None
    return cache


def folder_features(
    ckpt: ClipCheckpoint,
    folder: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> FolderFeatures:
    """The features of every image directly in ``folder`` (sorted by name), encoding only what the
    cache lacks. Unreadable files are skipped and named in a warning; none readable is an error."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder; --images takes a folder of pictures")
    paths = image_files([folder])  # an empty folder is an error that says so
    cache = Path(cache_dir).resolve() if cache_dir is not None else folder / CACHE_DIRNAME
    cached = _read_cache(cache, ckpt.key, folder)
    todo = [p for p in paths if p.name not in cached or cached[p.name][0] != _stamp(p)]
    new, kept, skipped = encode_images(ckpt, todo, batch_size=batch_size, progress=progress)
    fresh = {p.name: row for p, row in zip(kept, new, strict=True)}
    bad = {p.name for p, _ in skipped}
    order = [p for p in paths if p.name not in bad]
    if not order:
        raise ImageDataError(f"{folder}: none of the {len(paths)} image files could be read "
                             f"({', '.join(sorted(bad))})")  # fmt: skip
    _warn_skipped(folder, skipped)
    features = torch.stack([fresh[p.name] if p.name in fresh else cached[p.name][1] for p in order])
    written: Path | None = cache
    if todo or set(cached) != {p.name for p in order}:
        written = _write_cache(cache, ckpt.key, folder, order, features)
    return FolderFeatures(order, features, skipped, len(kept), written)


# --- the two searches ----------------------------------------------------------------------------


@dataclass
class Match:
    """One answer: its place (1 = best), its cosine with the query, its row, and the item itself."""

    rank: int
    score: float
    index: int
    item: Path | str


def _matches(scores: Tensor, indices: Tensor, items: Sequence[Path | str]) -> list[list[Match]]:
    return [
        [
            Match(r + 1, float(s), int(i), items[int(i)])
            for r, (s, i) in enumerate(zip(row_s, row_i, strict=True))
        ]
        for row_s, row_i in zip(scores, indices, strict=True)
    ]


@dataclass
class TextToImage:
    """Each query's best images of a folder (``matches[q]``), with the features behind them."""

    queries: list[str]
    matches: list[list[Match]]
    query_features: Tensor  # (Q, P)
    images: FolderFeatures


def text_to_image(
    ckpt: ClipCheckpoint,
    folder: str | os.PathLike[str],
    queries: Sequence[str],
    *,
    k: int = 8,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> TextToImage:
    """The ``k`` images of ``folder`` closest to each query (the folder's features come from its cache)."""
    queries = [queries] if isinstance(queries, str) else list(queries)
    query_features = encode_texts(ckpt, queries)
    images = folder_features(ckpt, folder, cache_dir=cache_dir, batch_size=batch_size, progress=progress)
    scores, indices = rank(query_features, images.features, k)
    return TextToImage(queries, _matches(scores, indices, images.paths), query_features, images)


@dataclass
class ImageToText:
    """Each image's best lines (``matches[i]``), with the features behind them."""

    images: list[Path]
    lines: list[str]
    matches: list[list[Match]]
    image_features: Tensor  # (N, P)
    text_features: Tensor  # (M, P)


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped: the candidates of image -> text."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file; --text takes a file with one caption per line")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from None
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path}: no captions in it; write one caption per line")
    return lines


def image_to_text(
    ckpt: ClipCheckpoint, images: Sequence[str | os.PathLike[str]], lines: Sequence[str], *, k: int = 5
) -> ImageToText:
    """The ``k`` lines closest to each image; unreadable images are skipped with a warning."""
    paths = image_files(list(images))
    features, kept, skipped = encode_images(ckpt, paths, progress=False)
    if not kept:
        raise ImageDataError("; ".join(why for _, why in skipped))
    _warn_skipped("image -> text", skipped)
    text_features = encode_texts(ckpt, lines)
    scores, indices = rank(features, text_features, k)
    return ImageToText(kept, list(lines), _matches(scores, indices, list(lines)), features, text_features)


# --- pictures of the results (drawn by glassformer.viz.clip) ---------------------------------------

MAX_PICTURED = 16  # rows or columns a similarity picture shows; rollout pictures show at most 8


def _pictures(ckpt: ClipCheckpoint, paths: Sequence[Path]) -> Tensor:
    channels = ckpt.model.config.vision.in_channels
    return torch.stack([read_picture(p, ckpt.image_size, channels) for p in paths])  # (N, C, S, S) uint8


def _label(match: Match) -> str:
    name = match.item.name if isinstance(match.item, Path) else textwrap.shorten(match.item, 24)
    return f"{match.rank}. {match.score:.3f}\n{textwrap.shorten(name, 22)}"


def save_grid(ckpt: ClipCheckpoint, result: TextToImage, path: str | os.PathLike[str]) -> Path:
    """The top-k grid of a text -> image search: one row per query, cosine and file under each picture."""
    from glassformer.viz.clip import plot_retrieval_grid

    rows = [(query, list(zip(_pictures(ckpt, [m.item for m in found]), map(_label, found), strict=True)))
            for query, found in zip(result.queries, result.matches, strict=True)]  # type: ignore[misc]  # fmt: skip
    return plot_retrieval_grid(
        rows, path, title=f"{ckpt.folder.name}: text -> image, {len(result.images.paths)} images"
    )


def _union(matches: Sequence[Sequence[Match]], limit: int) -> list[int]:
    """The rows the searches found, in order of first appearance, at most ``limit``."""
    return list(dict.fromkeys(m.index for found in matches for m in found))[:limit]


def save_similarity(
    ckpt: ClipCheckpoint, result: TextToImage | ImageToText, path: str | os.PathLike[str]
) -> Path:
    """The images x captions cosine picture of a search: the images it found (text -> image) or was
    given (image -> text), against its queries or the lines it found (all lines when they fit)."""
    from glassformer.viz.clip import plot_similarity_matrix

    if isinstance(result, TextToImage):
        rows = _union(result.matches, MAX_PICTURED)
        paths = [result.images.paths[i] for i in rows]
        images, captions, texts = result.images.features[rows], result.queries, result.query_features
    else:
        paths, images = result.images[:MAX_PICTURED], result.image_features[:MAX_PICTURED]
        cols = (
            list(range(len(result.lines)))
            if len(result.lines) <= MAX_PICTURED
            else _union(result.matches, MAX_PICTURED)
        )
        captions, texts = [result.lines[j] for j in cols], result.text_features[cols]
    return plot_similarity_matrix(images @ texts.T, _pictures(ckpt, paths), captions, path)


def save_rollout(
    ckpt: ClipCheckpoint, result: TextToImage | ImageToText, path: str | os.PathLike[str]
) -> Path:
    """Where the image tower looks in the pictures of a search: the first query's top images
    (text -> image), or the images given with their best line (image -> text); at most 8."""
    from glassformer.viz.clip import plot_query_rollouts

    if isinstance(result, TextToImage):
        found = result.matches[0][:8]
        paths, labels = [m.item for m in found], [_label(m) for m in found]
        title = f"“{textwrap.shorten(result.queries[0], 60)}”: where the image tower looks"
    else:
        paths = result.images[:8]
        labels = [f"{p.name}\n{_label(found[0])}" for p, found in zip(paths, result.matches, strict=False)]
        title = "image -> text: where the image tower looks"
    pictures = _pictures(ckpt, paths)  # type: ignore[arg-type]
    return plot_query_rollouts(ckpt.model.vision, ckpt.pixels(pictures), pictures, labels, path, title=title)
