"""Captioned pictures for CLIP: synthetic shapes with held-out compositions, and Fashion-MNIST.

**Shapes.** A 64x64 picture holds one object or two (a shape of :data:`SHAPES` in a colour of
:data:`COLOURS` and a size of :data:`SIZES`, on black), two of them related "left of" or
"above"; its caption says so: "a small red circle above a large blue square", or a paraphrase
("a large blue square below a small red circle", "there is ..."). Everything is a pure function
of ``(seed, split, index)``: item ``i`` is the same in a split of 100 or of 100,000, on every
machine (numpy's PCG64 stream and Pillow's integer drawing).

**Held-out compositions.** ``held_out`` rules such as ``"green triangle"`` (any words of a
colour, a shape and a size) name objects that never appear in ``train`` or ``test_seen`` and
appear in every ``test_heldout`` picture, while each colour and shape on its own stays in
training: the test of compositional generalisation. The default holds out one colour for each of
the four basic shapes (:data:`DEFAULT_HELD_OUT`).

**Ids.** ``caption_ids`` are equal exactly when the caption texts are equal (a 63-bit hash of
the text, the same in every split): CLIP's false-negative handling must not push apart two
pictures that share a caption. ``composition_ids`` are equal when two pictures show the same
objects in the same relation, whatever the paraphrase (``split.dataset(ids="composition")``
hands them to the loss in place of the caption ids).

**Fashion-MNIST** (:func:`fashion_captions`, when ``make fashion-mnist`` has run) pairs each
image with a templated caption ("a photo of a sandal"); its data set resizes the 28x28 gray
images to the same 3-channel 64x64 layout.

:class:`CaptionedImageData` is the map-style data set for both; its :meth:`collate
<CaptionedImageData.collate>` gives normalised ``pixel_values``, the ``captions`` (or, with a
tokenizer, ``input_ids`` and ``attention_mask``) and ``caption_ids``. Generated splits are
cached as safetensors under ``$GLASSFORMER_CACHE/shapes``; :func:`save_grid` draws examples with
their captions for the docs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from glassformer.utils.paths import cache_root
from glassformer.utils.progress import Progress
from glassformer.utils.suggest import did_you_mean

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross", "hexagon", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235), "yellow": (240, 220, 40),
    "purple": (150, 60, 210), "orange": (245, 140, 20), "cyan": (40, 210, 220), "white": (240, 240, 240),
}
SIZES: dict[str, float] = {"small": 0.22, "large": 0.375}  # the object's box side, as a share of the picture's
RELATIONS = ("left of", "above")
INVERSE_RELATIONS = {"left of": "right of", "above": "below"}
SPLITS = ("train", "test_seen", "test_heldout")
DEFAULT_HELD_OUT = ("green triangle", "red star", "blue circle", "yellow square")
# {a}: the first object (left or top), {b}: the second; {rel}/{inv}: the relation and its inverse
SINGLE_TEMPLATES = ("{a}", "there is {a}", "a picture of {a}", "an image of {a}")
PAIR_TEMPLATES = ("{a} {rel} {b}", "{b} {inv} {a}", "there is {a} {rel} {b}", "a picture of {b} {inv} {a}")
PIXEL_MEAN, PIXEL_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # [0, 1] -> [-1, 1]
GENERATOR_VERSION = 1  # bump when a change alters any picture or caption: it keys the cache
_SPLIT_CODES = {"train": 0, "test_seen": 1, "test_heldout": 2}
_MARGIN, _GAP = 0.03, 0.07  # picture edge margin and least gap between two objects, shares of the side
_KINDS = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES)}
_T = TypeVar("_T", bound="PairedImages")
# the role of each of an item's uniform draws (fixed, so that a change to one role moves no other)
(_U_TWO, _U_FIRST, _U_SECOND, _U_ORDER, _U_RELATION, _U_ALONG_A, _U_ALONG_B, _U_LINE,
 _U_JITTER_A, _U_JITTER_B, _U_TEMPLATE) = range(11)
_DRAWS = 11


class ShapesDataError(ValueError):
    """A shapes or captioned-image setting cannot be used; the message names it and says what to do."""


# --- held-out rules ---------------------------------------------------------------------------------

def parse_rule(rule: str) -> dict[str, str]:
    """``"small green triangle"`` -> ``{"size": "small", "colour": "green", "shape": "triangle"}``.

    Any non-empty subset of a colour, a shape and a size, in any order; an unknown word is an error
    that lists the known ones.
    """
    words = str(rule).lower().split()
    if not words:
        raise ShapesDataError("an empty held-out rule: write words such as 'green triangle' or 'large star'")
    parsed: dict[str, str] = {}
    for word in words:
        kind = next((k for k, names in _KINDS.items() if word in names), None)
        if kind is None:
            known = "; ".join(f"{k}s: {', '.join(v)}" for k, v in _KINDS.items())
            everything = [n for names in _KINDS.values() for n in names]
            raise ShapesDataError(f"unknown word {word!r} in held-out rule {rule!r}{did_you_mean(word, everything)}; known {known}")
        if kind in parsed:
            raise ShapesDataError(f"held-out rule {rule!r} names two {kind}s ({parsed[kind]!r}, {word!r}): "
                                  "one rule describes one kind of object; list several rules instead")
        parsed[kind] = word
    return parsed


def parse_rules(held_out: str | Sequence[str]) -> tuple[dict[str, str], ...]:
    """Rules from a sequence of phrases or one comma-separated string (``"green triangle, red star"``)."""
    if isinstance(held_out, str):
        return tuple(parse_rule(p) for p in held_out.split(",") if p.strip())  # "a, b," has two rules
    return tuple(parse_rule(p) for p in held_out)


def _matches(obj: tuple[int, int, int], rules: Sequence[dict[str, str]]) -> bool:
    """Whether object (shape, colour, size) indices fit any rule."""
    named = {"shape": SHAPES[obj[0]], "colour": tuple(COLOURS)[obj[1]], "size": tuple(SIZES)[obj[2]]}
    return any(all(named[k] == v for k, v in rule.items()) for rule in rules)


def object_pools(held_out: str | Sequence[str]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """(seen, held-out) lists of every (shape, colour, size) index triple, split by the rules."""
    rules = parse_rules(held_out)
    every = [(s, c, z) for s in range(len(SHAPES)) for c in range(len(COLOURS)) for z in range(len(SIZES))]
    held = [o for o in every if _matches(o, rules)]
    seen = [o for o in every if not _matches(o, rules)]
    if not seen:
        raise ShapesDataError(f"the held-out rules {held_out!r} hold out every object: nothing is left to train on")
    for kind, position in (("shape", 0), ("colour", 1), ("size", 2)):
        missing = sorted({o[position] for o in every} - {o[position] for o in seen})
        if missing:
            names = [_KINDS[kind][i] for i in missing]
            warnings.warn(f"held-out rules {held_out!r} remove the {kind}(s) {names} from training altogether: "
                          "the model never sees the word, so held-out scores measure nothing compositional", stacklevel=3)
    return seen, held


# --- scenes -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapeObject:
    """One object: its names and its box ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive)."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    def phrase(self) -> str:
        """``"a small red circle"``."""
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """The objects of a picture; with two, ``objects[0]`` is ``relation`` ("left of", "above") ``objects[1]``."""

    objects: tuple[ShapeObject, ...]
    relation: str | None = None

    def caption(self, template: int = 0) -> str:
        """The caption under template ``template`` (0: the canonical form, left or top object first)."""
        a = self.objects[0].phrase()
        if self.relation is None:
            return SINGLE_TEMPLATES[template].format(a=a)
        rel, inv = self.relation, INVERSE_RELATIONS[self.relation]
        return PAIR_TEMPLATES[template].format(a=a, b=self.objects[1].phrase(), rel=rel, inv=inv)


def _pick(u: float, lo: int, hi: int) -> int:
    """The integer in ``[lo, hi]`` that the uniform draw ``u`` in [0, 1) selects."""
    return lo + min(int(u * (hi - lo + 1)), hi - lo)


def _pick_objects(u: np.ndarray, split: str, two: bool, seen: list, held: list) -> list[tuple[int, int, int]]:
    """One or two distinct objects: from ``seen`` only, or (test_heldout) with at least one held out."""
    first_pool, pool = (held, seen + held) if split == "test_heldout" else (seen, seen)
    first = first_pool[_pick(u[_U_FIRST], 0, len(first_pool) - 1)]
    if not two:
        return [first]
    if len(pool) == 1:
        second = first  # a one-object pool: the pair repeats it
    else:
        j = _pick(u[_U_SECOND], 0, len(pool) - 2)
        second = pool[j + (j >= pool.index(first))]  # any object of the pool but the first
    return [first, second] if u[_U_ORDER] < 0.5 else [second, first]


def _place_pair(u: np.ndarray, sides: tuple[int, int], relation: str, size: int) -> list[tuple[int, int]]:
    """Top-left corners of two square boxes, the first ``relation`` the second, apart by at least the gap."""
    margin, gap = round(_MARGIN * size), max(2, round(_GAP * size))
    a, b = sides
    start_a = _pick(u[_U_ALONG_A], margin, size - margin - (a + gap + b))  # along the relation's axis
    start_b = _pick(u[_U_ALONG_B], start_a + a + gap, size - margin - b)
    jitter = min(a, b) // 4  # across it, the centres stay within a quarter side of a common line
    big = max(a, b)
    line = _pick(u[_U_LINE], margin + big // 2 + jitter, size - margin - (big - big // 2) - jitter)
    across = [line - s // 2 + _pick(u[k], -jitter, jitter) for s, k in ((a, _U_JITTER_A), (b, _U_JITTER_B))]
    if relation == "left of":
        return [(start_a, across[0]), (start_b, across[1])]
    return [(across[0], start_a), (across[1], start_b)]


def scene_from_uniforms(u: np.ndarray, split: str, pools: tuple[list, list], size: int = 64,
                        two_object_fraction: float = 0.5) -> tuple[Scene, int]:
    """The scene and paraphrase template that ``_DRAWS`` uniforms in [0, 1) select, one role per slot."""
    two = bool(u[_U_TWO] < two_object_fraction)
    picked = _pick_objects(u, split, two, *pools)
    sides = [round(tuple(SIZES.values())[z] * size) for _, _, z in picked]
    if two:
        relation: str | None = RELATIONS[int(u[_U_RELATION] * len(RELATIONS))]
        corners = _place_pair(u, (sides[0], sides[1]), relation, size)
    else:
        relation, margin = None, round(_MARGIN * size)
        corners = [(_pick(u[_U_ALONG_A], margin, size - margin - sides[0]), _pick(u[_U_ALONG_B], margin, size - margin - sides[0]))]
    objects = tuple(
        ShapeObject(SHAPES[s], tuple(COLOURS)[c], tuple(SIZES)[z], (x, y, x + side, y + side))
        for (s, c, z), side, (x, y) in zip(picked, sides, corners)
    )
    template = _pick(u[_U_TEMPLATE], 0, len(PAIR_TEMPLATES if two else SINGLE_TEMPLATES) - 1)
    return Scene(objects, relation), template


def _split_stream(seed: int, split: str) -> np.random.Generator:
    """The split's PCG64 stream; item ``i`` reads draws ``[i * _DRAWS, (i + 1) * _DRAWS)`` of it."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _SPLIT_CODES[split]])))


def split_uniforms(seed: int, split: str, n: int, start: int = 0) -> np.ndarray:
    """float64 ``(n, _DRAWS)``: the uniforms of items ``start .. start + n - 1`` (jumping, not drawing, to ``start``)."""
    rng = _split_stream(seed, split)
    rng.bit_generator.advance(start * _DRAWS)  # one 64-bit output per double
    return rng.random((n, _DRAWS))


def random_scene(seed: int, split: str, index: int, pools: tuple[list, list], size: int = 64,
                 two_object_fraction: float = 0.5) -> tuple[Scene, int]:
    """Item ``index`` of ``split``: its scene and its paraphrase template, from ``(seed, split, index)`` alone."""
    return scene_from_uniforms(split_uniforms(seed, split, 1, index)[0], split, pools, size, two_object_fraction)


def _scenes(objects: Tensor, boxes: Tensor, relation: Tensor) -> list[Scene]:
    """Scenes back from the stored structure: ``objects`` (N, 2, 3), ``boxes`` (N, 2, 4), ``relation`` (N,)."""
    colours, sizes = tuple(COLOURS), tuple(SIZES)
    return [
        Scene(tuple(ShapeObject(SHAPES[o[0]], colours[o[1]], sizes[o[2]], tuple(b)) for o, b in zip(objs, bxs) if o[0] >= 0),
              RELATIONS[r] if r >= 0 else None)
        for objs, bxs, r in zip(objects.tolist(), boxes.tolist(), relation.tolist())
    ]


# --- drawing ----------------------------------------------------------------------------------------

def _regular(cx: float, cy: float, radii: Sequence[float], start_deg: float) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles from ``start_deg``, the i-th at radius ``radii[i]`` (a star alternates two)."""
    step = 2 * math.pi / len(radii)
    start = math.radians(start_deg)
    return [(cx + r * math.cos(start + i * step), cy + r * math.sin(start + i * step)) for i, r in enumerate(radii)]


def _polygon(shape: str, x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """The outline of a polygonal shape inside the box."""
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        return _regular(cx, cy + 0.1 * r, [r, 0.42 * r] * 5, -90.0)
    if shape == "hexagon":
        return _regular(cx, cy, [r] * 6, 0.0)
    if shape == "cross":
        t = 0.34 * r  # half the bar width
        return [(cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x1, cy - t), (x1, cy + t), (cx + t, cy + t),
                (cx + t, y1), (cx - t, y1), (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t)]
    raise ShapesDataError(f"no outline for shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def draw_scene(scene: Scene, size: int = 64, supersample: int = 4) -> np.ndarray:
    """The scene as uint8 ``(size, size, 3)``: drawn ``supersample`` times larger, then box-filtered down."""
    from PIL import Image, ImageDraw

    k = supersample
    image = Image.new("RGB", (size * k, size * k))
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        x0, y0, x1, y1 = (v * k for v in obj.box)
        box = (x0, y0, x1 - 1, y1 - 1)  # Pillow's boxes include their last pixel
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "ring":
            draw.ellipse(box, outline=fill, width=max(1, round(0.2 * (x1 - x0))))
        else:
            draw.polygon(_polygon(obj.shape, *box), fill=fill)
    return np.asarray(image.reduce(k) if k > 1 else image, dtype=np.uint8)


# --- ids ----------------------------------------------------------------------------------------------

def caption_id(text: str) -> int:
    """A non-negative 63-bit id of a caption: equal ids for equal texts, in every split and run."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def _ids(texts: Sequence[str]) -> Tensor:
    return torch.tensor([caption_id(t) for t in texts], dtype=torch.int64)


# --- paired sets ------------------------------------------------------------------------------------

@dataclass
class PairedImages:
    """Images with one caption each, their caption ids and a class label (for zero-shot tests).

    ``images``: uint8 ``(N, C, H, W)``; ``labels`` index ``classes``.
    """

    images: Tensor
    captions: list[str]
    caption_ids: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        for name in ("captions", "caption_ids", "labels"):
            if len(getattr(self, name)) != n:
                raise ShapesDataError(f"{type(self).__name__}: {len(getattr(self, name))} {name} for {n} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self: _T, index: Tensor | Sequence[int]) -> _T:
        """The items at ``index`` (int indices or a bool mask of length N), every field sliced alike."""
        idx = torch.as_tensor(index)
        if idx.dtype == torch.bool:
            if idx.shape != (len(self),):
                raise ShapesDataError(f"subset: a mask of shape {tuple(idx.shape)} for {len(self)} items")
            idx = idx.nonzero().flatten()
        picked = idx.long().tolist()
        values = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values[f.name] = value[idx.long()] if isinstance(value, Tensor) else [value[i] for i in picked] if isinstance(value, list) else value
        return type(self)(**values)

    def dataset(self, **options: Any) -> CaptionedImageData:
        """A :class:`CaptionedImageData` of these pairs; ``options`` go to its constructor."""
        return CaptionedImageData(self.images, self.captions, self.caption_ids, **options)


@dataclass
class ShapesSplit(PairedImages):
    """A split of the shapes set, with each picture's structure.

    ``objects``: int64 ``(N, 2, 3)`` indices (shape in :data:`SHAPES`, colour in :data:`COLOURS`,
    size in :data:`SIZES`), -1 in the second row of a one-object picture; ``boxes``: ``(N, 2, 4)``
    pixels (-1 likewise); ``relation``: ``(N,)`` index in :data:`RELATIONS`, -1 for one object;
    ``templates``: the paraphrase of each caption; ``labels``: the first object's shape, which
    names the picture for zero-shot classification only when it holds one object
    (``split.subset(split.n_objects == 1)``).
    """

    split: str
    objects: Tensor
    boxes: Tensor
    relation: Tensor
    templates: Tensor
    composition_ids: Tensor

    @property
    def n_objects(self) -> Tensor:
        """int64 ``(N,)``: 1 or 2."""
        return (self.objects[:, :, 0] >= 0).sum(1)

    def dataset(self, *, ids: str = "caption", **options: Any) -> CaptionedImageData:
        """A :class:`CaptionedImageData`; ``ids="composition"`` gives it ``composition_ids`` as its caption ids,
        so that paraphrases of one composition count as the same caption (no false negatives between them)."""
        if ids not in ("caption", "composition"):
            raise ShapesDataError(f"ids must be 'caption' or 'composition', got {ids!r}{did_you_mean(ids, ['caption', 'composition'])}")
        chosen = self.caption_ids if ids == "caption" else self.composition_ids
        return CaptionedImageData(self.images, self.captions, chosen, **options)

    def scene(self, index: int) -> Scene:
        """Item ``index`` as a :class:`Scene`."""
        return _scenes(self.objects[index : index + 1], self.boxes[index : index + 1], self.relation[index : index + 1])[0]


# --- generating a split -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShapesConfig:
    """What a shapes split looks like.

    ``held_out``: rules (see :func:`parse_rule`), or one comma-separated string of them; ``paraphrase``:
    draw each caption's template at random (``None``: yes for ``train``, no for the test splits,
    whose captions are then canonical, so one composition has one caption); ``supersample``: the
    anti-aliasing factor (1: hard edges, a little faster).
    """

    image_size: int = 64
    held_out: tuple[str, ...] = DEFAULT_HELD_OUT
    two_object_fraction: float = 0.5
    paraphrase: bool | None = None
    supersample: int = 4

    def __post_init__(self) -> None:
        """``held_out`` as a tuple of phrases, from a comma-separated string or any sequence (it keys the cache)."""
        if isinstance(self.held_out, str):
            rules = tuple(r.strip() for r in self.held_out.split(",") if r.strip())  # "a, b," has two rules
        else:
            rules = tuple(str(r) for r in self.held_out)
        object.__setattr__(self, "held_out", rules)

    def check(self) -> None:
        """Raise :class:`ShapesDataError` naming the first field that cannot work."""
        if not isinstance(self.image_size, int) or self.image_size < 32:
            raise ShapesDataError(f"ShapesConfig.image_size must be an int of at least 32 pixels, got {self.image_size!r}")
        if not 0.0 <= self.two_object_fraction <= 1.0:
            raise ShapesDataError(f"ShapesConfig.two_object_fraction must be within [0, 1], got {self.two_object_fraction!r}")
        if not isinstance(self.supersample, int) or not 1 <= self.supersample <= 8:
            raise ShapesDataError(f"ShapesConfig.supersample must be an int from 1 to 8, got {self.supersample!r}")
        parse_rules(self.held_out)


def _check_request(split: str, n: int, seed: int) -> None:
    if split not in SPLITS:
        raise ShapesDataError(f"unknown split {split!r}{did_you_mean(split, SPLITS)}; the splits are {', '.join(SPLITS)}")
    if not isinstance(n, int) or n < 1:
        raise ShapesDataError(f"n must be a positive number of pictures, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ShapesDataError(f"seed must be a non-negative int, got {seed!r}")


def _generate(split: str, n: int, seed: int, config: ShapesConfig, show_progress: bool) -> dict[str, Tensor]:
    """The split's tensors: pictures and structure (the captions follow from them)."""
    pools = object_pools(config.held_out)
    if split == "test_heldout" and not pools[1]:
        raise ShapesDataError("test_heldout needs held-out compositions, but ShapesConfig.held_out is empty")
    s, colours = config.image_size, tuple(COLOURS)
    images = np.zeros((n, s, s, 3), dtype=np.uint8)
    objects, boxes = np.full((n, 2, 3), -1, dtype=np.int64), np.full((n, 2, 4), -1, dtype=np.int64)
    relation, templates = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    uniforms = split_uniforms(seed, split, n)  # (n, _DRAWS)
    progress = Progress(n, desc=f"drawing shapes {split}", unit="img", enabled=show_progress)
    for i in range(n):
        scene, templates[i] = scene_from_uniforms(uniforms[i], split, pools, s, config.two_object_fraction)
        images[i] = draw_scene(scene, s, config.supersample)
        for k, obj in enumerate(scene.objects):
            objects[i, k] = (SHAPES.index(obj.shape), colours.index(obj.colour), tuple(SIZES).index(obj.size))
            boxes[i, k] = obj.box
        relation[i] = RELATIONS.index(scene.relation) if scene.relation else -1
        progress.update()
    progress.close()
    return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # (N, 3, S, S)
            "objects": torch.from_numpy(objects), "boxes": torch.from_numpy(boxes),
            "relation": torch.from_numpy(relation), "templates": torch.from_numpy(templates)}


def _cache_path(split: str, n: int, seed: int, config: ShapesConfig) -> Path:
    import PIL

    key = json.dumps([GENERATOR_VERSION, PIL.__version__, np.__version__, split, n, seed,
                      dataclasses.asdict(config) | {"paraphrase": None}], sort_keys=True)
    return cache_root() / "shapes" / f"{split}-{n}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"


def _load_or_generate(split: str, n: int, seed: int, config: ShapesConfig, cache: bool, show_progress: bool) -> dict[str, Tensor]:
    """From the cache when a sound entry exists, else generated (and cached when ``cache``)."""
    from glassformer.utils.weights import WeightsError, read_safetensors, write_safetensors

    path = _cache_path(split, n, seed, config)
    if cache and path.is_file():
        try:
            found = read_safetensors(path)
            if set(found) == {"images", "objects", "boxes", "relation", "templates"} and found["images"].shape[0] == n:
                return found
        except (WeightsError, OSError):
            pass  # a damaged cache entry is redrawn, never trusted
    tensors = _generate(split, n, seed, config, show_progress)
    if cache:
        try:
            write_safetensors(tensors, path)
        except OSError as exc:
            warnings.warn(f"could not cache the shapes split in {path} ({exc}); it will be drawn again next time", stacklevel=3)
    return tensors


def shapes_split(split: str, n: int, *, seed: int = 0, config: ShapesConfig | None = None, cache: bool = True,
                 show_progress: bool = False) -> ShapesSplit:
    """``n`` pictures of ``split`` ("train", "test_seen", "test_heldout") with their captions and structure.

    Item ``i`` depends on ``(seed, split, i)`` and ``config`` only. With ``cache``, the pictures
    are kept in ``$GLASSFORMER_CACHE/shapes`` (safetensors) and read back next time.
    """
    config = config or ShapesConfig()
    config.check()
    _check_request(split, n, seed)
    t = _load_or_generate(split, n, seed, config, cache, show_progress)
    paraphrase = config.paraphrase if config.paraphrase is not None else split == "train"
    templates = t["templates"] if paraphrase else torch.zeros_like(t["templates"])
    scenes = _scenes(t["objects"], t["boxes"], t["relation"])
    captions = [sc.caption(int(k)) for sc, k in zip(scenes, templates)]
    canonical = [sc.caption(0) for sc in scenes]
    return ShapesSplit(t["images"], captions, _ids(captions), t["objects"][:, 0, 0].clone(), SHAPES, split=split,
                       objects=t["objects"], boxes=t["boxes"], relation=t["relation"], templates=templates,
                       composition_ids=_ids(canonical))


def shapes_splits(n_train: int, n_test: int, *, seed: int = 0, config: ShapesConfig | None = None,
                  cache: bool = True, show_progress: bool = False) -> dict[str, ShapesSplit]:
    """All three splits: ``n_train`` training pictures and ``n_test`` in each test split."""
    sizes = {"train": n_train, "test_seen": n_test, "test_heldout": n_test}
    return {s: shapes_split(s, k, seed=seed, config=config, cache=cache, show_progress=show_progress) for s, k in sizes.items()}


# --- Fashion-MNIST with captions -------------------------------------------------------------------

FASHION_CAPTION_NAMES = ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle boot")  # FASHION_MNIST_CLASSES as a caption says them
FASHION_TEMPLATES = ("a photo of {}", "a picture of {}", "there is {}", "an image of {}")


def with_article(name: str) -> str:
    """``"a sandal"``, ``"an ankle boot"``."""
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def fashion_captions(split: str = "train", *, seed: int = 0, paraphrase: bool | None = None,
                     root: str | os.PathLike[str] | None = None, limit: int | None = None) -> PairedImages:
    """Fashion-MNIST ``split`` with one templated caption per image ("a photo of a sandal").

    ``paraphrase`` (default: yes for "train") draws each caption's template from
    :data:`FASHION_TEMPLATES` with ``seed``, else every caption uses the first. ``limit`` keeps the
    first images only. The images stay uint8 ``(N, 1, 28, 28)``: the data set resizes them
    (``image_size=64, channels=3``, the default of :class:`CaptionedImageData`).
    """
    from glassformer.data.images import load_fashion_mnist

    images, labels = load_fashion_mnist(split, root)
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise ShapesDataError(f"limit must be a positive number of images, got {limit!r}")
        images, labels = images[:limit], labels[:limit]
    if paraphrase if paraphrase is not None else split == "train":
        rng = np.random.default_rng([seed, 3 + ("train", "test").index(split)])
        templates = rng.integers(len(FASHION_TEMPLATES), size=len(labels)).tolist()
    else:
        templates = [0] * len(labels)
    captions = [FASHION_TEMPLATES[k].format(with_article(FASHION_CAPTION_NAMES[c])) for k, c in zip(templates, labels.tolist())]
    return PairedImages(images[:, None].contiguous(), captions, _ids(captions), labels, FASHION_CAPTION_NAMES)


# --- the data set ---------------------------------------------------------------------------------------

Tokenizer = Callable[[str], Sequence[int] | Tensor]


class CaptionedImageData(Dataset):
    """Images with captions, as ``{"pixel_values": float (3, S, S), "caption": str, "caption_id": int}`` items.

    ``images``: uint8 ``(N, C, H, W)``; an item is resized to ``image_size`` (bilinear) when it is
    another size, its gray channel copied to ``channels`` when C is 1, and normalised with
    ``mean``/``std``. Pass ``collate_fn=data.collate`` (the trainer picks it up by itself). With a
    ``tokenizer`` (any callable text -> ids, e.g. the CLIP tokenizer's encode), batches are ready
    for ``model(**batch)``.
    """

    def __init__(self, images: Tensor, captions: Sequence[str], caption_ids: Tensor, *, image_size: int = 64,
                 channels: int = 3, mean: Sequence[float] = PIXEL_MEAN, std: Sequence[float] = PIXEL_STD,
                 tokenizer: Tokenizer | None = None, pad_id: int = 0) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
            raise ShapesDataError(f"CaptionedImageData: images must be a uint8 tensor (N, C, H, W), got {got}")
        if images.shape[1] not in (1, channels):
            raise ShapesDataError(f"CaptionedImageData: images with {images.shape[1]} channels for a {channels}-channel model; "
                                  "give 1-channel (gray, copied) or matching images")
        if not len(captions) == len(caption_ids) == images.shape[0]:
            raise ShapesDataError(f"CaptionedImageData: {images.shape[0]} images, {len(captions)} captions and "
                                  f"{len(caption_ids)} caption ids; give one caption and id per image")
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise ShapesDataError(f"CaptionedImageData: mean {tuple(mean)} and std {tuple(std)} need {channels} values each, std > 0")
        self.images, self.captions, self.caption_ids = images, list(captions), torch.as_tensor(caption_ids, dtype=torch.int64)
        self.image_size, self.channels, self.tokenizer, self.pad_id = image_size, channels, tokenizer, pad_id
        self._scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))).reshape(-1, 1, 1)  # (C, 1, 1)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pixels(self, index: int | slice | Tensor) -> Tensor:
        """Normalised float pixels of item(s) ``index``: ``(C, S, S)`` or ``(B, C, S, S)``."""
        x = self.images[index]
        batch = x if x.dim() == 4 else x[None]  # (B, C, H, W)
        if batch.shape[-2:] != (self.image_size, self.image_size):
            batch = F.interpolate(batch.float(), size=(self.image_size,) * 2, mode="bilinear", align_corners=False)
        batch = torch.addcmul(self._shift, batch.float().expand(-1, self.channels, -1, -1), self._scale)
        return batch if x.dim() == 4 else batch[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": self.pixels(index), "caption": self.captions[index], "caption_id": int(self.caption_ids[index])}

    def tokenize(self, captions: Sequence[str]) -> dict[str, Tensor]:
        """``input_ids`` and ``attention_mask`` int64 ``(B, T)``: each caption's ids, padded with ``pad_id`` to the longest."""
        if self.tokenizer is None:
            raise ShapesDataError("CaptionedImageData.tokenize needs a tokenizer: pass tokenizer=... (text -> ids)")
        rows = [self._ids_of(text) for text in captions]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rows), longest), dtype=torch.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.as_tensor(row, dtype=torch.int64), 1
        return {"input_ids": ids, "attention_mask": mask}

    def _ids_of(self, text: str) -> list[int]:
        out = self.tokenizer(text)  # type: ignore[misc]
        ids = out.tolist() if isinstance(out, Tensor) else list(out) if isinstance(out, (list, tuple)) else None
        if ids is None or not ids or not all(isinstance(i, int) for i in ids):
            raise ShapesDataError(f"the tokenizer gave {type(out).__name__} {str(out)[:60]!r} for {text!r}; "
                                  "it must return a non-empty list (or 1-D tensor) of int ids")
        return ids

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A batch: ``pixel_values`` ``(B, C, S, S)``, ``caption_ids`` ``(B,)`` and the ``captions`` (list of str),
        or, with a tokenizer, ``input_ids`` and ``attention_mask`` in place of the strings."""
        if not items:
            raise ShapesDataError("CaptionedImageData.collate: an empty batch")
        batch: dict[str, Any] = {"pixel_values": torch.stack([item["pixel_values"] for item in items]),
                                 "caption_ids": torch.tensor([item["caption_id"] for item in items], dtype=torch.int64)}
        captions = [item["caption"] for item in items]
        if self.tokenizer is None:
            batch["captions"] = captions
        else:
            batch.update(self.tokenize(captions))
        return batch


# --- a picture of examples ------------------------------------------------------------------------------

def save_grid(pairs: PairedImages, path: str | os.PathLike[str], *, count: int = 16, columns: int = 4,
              scale: int = 3) -> Path:
    """A PNG of the first ``count`` pictures, ``scale`` times enlarged, each above its caption (wrapped)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    count = min(count, len(pairs))
    if count < 1 or columns < 1 or scale < 1:
        raise ShapesDataError(f"save_grid: count ({count}), columns ({columns}) and scale ({scale}) must be at least 1")
    side = pairs.images.shape[-1] * scale
    font = ImageFont.load_default()
    lines = [textwrap.wrap(pairs.captions[i], width=max(12, side // 6)) for i in range(count)]
    text_h = 12 * max(len(wrapped) for wrapped in lines) + 6
    rows = math.ceil(count / columns)
    sheet = Image.new("RGB", (columns * (side + 8) + 8, rows * (side + text_h + 8) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(count):
        x, y = 8 + (i % columns) * (side + 8), 8 + (i // columns) * (side + text_h + 8)
        picture = pairs.images[i].expand(3, -1, -1).permute(1, 2, 0).numpy()
        sheet.paste(Image.fromarray(picture).resize((side, side), Image.NEAREST), (x, y))
        draw.multiline_text((x, y + side + 3), "\n".join(lines[i]), fill="black", font=font, spacing=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
