"""The captioned shapes set: determinism, held-out compositions, captions against pixels, ids, errors, data set."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from glassformer.data import shapes
from glassformer.data.images import FASHION_MNIST_DIR
from glassformer.data.shapes import (
    COLOURS,
    DEFAULT_HELD_OUT,
    SHAPES,
    CaptionedImageData,
    ShapesConfig,
    ShapesDataError,
    caption_id,
    fashion_captions,
    object_pools,
    parse_rule,
    random_scene,
    save_grid,
    shapes_split,
)

needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST missing: run `make fashion-mnist`",
)
INVERSE = {"right of": "left of", "below": "above"}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test writes its cache to its own folder, never to the user's."""
    monkeypatch.setenv("GLASSFORMER_CACHE", str(tmp_path / "cache"))


def split(name: str = "train", n: int = 120, **config: object) -> shapes.ShapesSplit:
    """A split drawn without anti-aliasing (faster) unless ``supersample`` says otherwise; no cache."""
    config.setdefault("supersample", 1)
    return shapes_split(name, n, seed=config.pop("seed", 0), config=ShapesConfig(**config), cache=False)  # type: ignore[arg-type]


def parse_caption(caption: str) -> tuple[list[tuple[str, str, str]], str | None]:
    """(size, colour, shape) per object, left or top first, and the relation, read from the words alone."""
    text = re.sub(r"^(there is |a picture of |an image of )", "", caption)
    m = re.fullmatch(r"a (small|large) (\w+) (\w+)(?: (left of|right of|above|below) a (small|large) (\w+) (\w+))?", text)
    assert m is not None, f"caption {caption!r} is not of the expected form"
    objects = [m.group(1, 2, 3)]
    relation = m.group(4)
    if relation is not None:
        objects.append(m.group(5, 6, 7))
        if relation in INVERSE:
            objects, relation = objects[::-1], INVERSE[relation]
    return objects, relation


def runs(occupied: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], occupied.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def part_colour_and_extent(picture: np.ndarray, mask: np.ndarray) -> tuple[tuple[int, int, int], int]:
    """The most frequent exact colour of the masked pixels and the larger side of their bounding box."""
    colours, counts = np.unique(picture[mask], axis=0, return_counts=True)
    ys, xs = np.nonzero(mask)
    return tuple(int(v) for v in colours[counts.argmax()]), int(max(xs.max() - xs.min(), ys.max() - ys.min()) + 1)


# --- determinism ------------------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_pictures() -> None:
    a, b = split(n=40), split(n=40)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert torch.equal(a.caption_ids, b.caption_ids) and torch.equal(a.objects, b.objects)
    other = split(n=40, seed=1)
    assert not torch.equal(a.images, other.images) and a.captions != other.captions
    seen = split("test_seen", 40)
    assert not torch.equal(a.images, seen.images), "train and test_seen must be different streams"


def test_items_depend_on_seed_split_and_index_only() -> None:
    long, short = split(n=60, supersample=4), split(n=25, supersample=4)
    assert torch.equal(long.images[:25], short.images) and long.captions[:25] == short.captions
    pools = object_pools(DEFAULT_HELD_OUT)
    for i in (0, 7, 59):  # one item on its own, jumping to its place in the stream
        scene, template = random_scene(0, "train", i, pools)
        assert scene == long.scene(i) and scene.caption(template) == long.captions[i]
        assert np.array_equal(shapes.draw_scene(scene), long.images[i].permute(1, 2, 0).numpy())


def test_captions_are_pinned() -> None:
    """The stream itself: a change of any draw's role changes these (and must bump GENERATOR_VERSION)."""
    assert split(n=4).captions == [
        "an image of a small yellow triangle",
        "a large green circle left of a small white hexagon",
        "a large blue cross",
        "there is a large yellow diamond",
    ]


# --- held-out compositions ----------------------------------------------------------------------------

def held(obj: tuple[str, str, str], rules: tuple[str, ...] = DEFAULT_HELD_OUT) -> bool:
    return any(set(rule.split()) <= set(obj) for rule in rules)


def test_held_out_compositions_never_in_training_always_in_test_heldout() -> None:
    seen = {name: split(name, 200).captions for name in ("train", "test_seen")}
    for name, captions in seen.items():
        for caption in captions:
            assert not any(held(o) for o in parse_caption(caption)[0]), f"{name} holds a held-out object: {caption!r}"
    found = set()
    for caption in split("test_heldout", 200).captions:
        objects = parse_caption(caption)[0]
        assert any(held(o) for o in objects), f"test_heldout item without a held-out object: {caption!r}"
        found |= {rule for rule in DEFAULT_HELD_OUT for o in objects if held(o, (rule,))}
    assert found == set(DEFAULT_HELD_OUT)
    words = {w for c in seen["train"] for o in parse_caption(c)[0] for w in o}
    assert {"green", "triangle", "red", "star"} <= words, "each word of a held-out pair stays in training"


def test_held_out_rule_is_a_parameter() -> None:
    assert ShapesConfig(held_out="green triangle, red star,").held_out == ("green triangle", "red star")  # type: ignore[arg-type]
    rules = ("large cyan", "small ring")
    for caption in split("train", 200, held_out=rules).captions:
        assert not any(held(o, rules) for o in parse_caption(caption)[0]), caption
    assert all(any(held(o, rules) for o in parse_caption(c)[0]) for c in split("test_heldout", 100, held_out=rules).captions)


# --- captions against the pixels ----------------------------------------------------------------------

def test_captions_match_the_drawn_pictures() -> None:
    data = split("train", 150, supersample=4)
    for i, caption in enumerate(data.captions):
        picture = data.images[i].permute(1, 2, 0).numpy()  # (H, W, 3)
        foreground = picture.max(axis=2) > 40
        objects, relation = parse_caption(caption)
        axis = 0 if relation == "left of" else 1  # collapse rows to see columns, or columns to see rows
        spans = runs(foreground.any(axis=axis))
        assert len(spans) == len(objects), f"{caption!r}: {len(spans)} separate objects along the relation's axis"
        for (size, colour, _), (lo, hi) in zip(objects, spans):
            mask = np.zeros_like(foreground)
            if axis == 0:
                mask[:, lo:hi] = foreground[:, lo:hi]
            else:
                mask[lo:hi] = foreground[lo:hi]
            found, extent = part_colour_and_extent(picture, mask)
            assert found == COLOURS[colour], f"{caption!r}: the {colour} object is drawn in {found}"
            assert (extent > 19) == (size == "large"), f"{caption!r}: a {size} object {extent} pixels across"


def test_structure_agrees_with_captions() -> None:
    data = split("train", 120)
    for i, caption in enumerate(data.captions):
        objects, relation = parse_caption(caption)
        scene = data.scene(i)
        assert [(o.size, o.colour, o.shape) for o in scene.objects] == objects and scene.relation == relation
        assert data.labels[i] == SHAPES.index(objects[0][2])
        assert (data.n_objects[i] == 2) == (relation is not None)
    single = data.subset(data.n_objects == 1)  # the zero-shot shape classification set
    assert 0 < len(single) < len(data) and all(single.scene(i).relation is None for i in range(len(single)))
    assert [SHAPES[k] for k in single.labels.tolist()] == [parse_caption(c)[0][0][2] for c in single.captions]
    assert torch.equal(single.images, data.images[data.n_objects == 1])


# --- ids ------------------------------------------------------------------------------------------------

def test_caption_ids_group_exactly_the_equal_captions() -> None:
    for data in (split("test_seen", 200, two_object_fraction=0.0), split("train", 200, two_object_fraction=0.0)):
        same_text = torch.tensor([[a == b for b in data.captions] for a in data.captions])
        assert torch.equal(data.caption_ids[:, None] == data.caption_ids[None, :], same_text)
        assert same_text.sum() > len(data), "the check needs repeated captions"
    assert caption_id("a large red star") == caption_id("a large red star") >= 0


def test_paraphrases_share_a_composition_id() -> None:
    data = split("train", 200, two_object_fraction=1.0)
    structure = [parse_caption(c) for c in data.captions]
    same = torch.tensor([[a == b for b in structure] for a in structure])
    assert torch.equal(data.composition_ids[:, None] == data.composition_ids[None, :], same)
    canonical = split("test_seen", 50)
    assert torch.equal(canonical.caption_ids, canonical.composition_ids), "test captions are canonical by default"
    assert len(set(data.templates.tolist())) == len(shapes.PAIR_TEMPLATES)
    grouped = data.dataset(ids="composition")
    assert torch.equal(grouped.collate([grouped[i] for i in range(8)])["caption_ids"], data.composition_ids[:8])
    with pytest.raises(ShapesDataError, match="did you mean 'composition'"):
        data.dataset(ids="compositions")


# --- cache ------------------------------------------------------------------------------------------------

def test_cache_round_trip_and_damaged_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = shapes_split("train", 30)
    files = list((tmp_path / "cache" / "shapes").glob("*.safetensors"))
    assert len(files) == 1
    with monkeypatch.context() as m:
        m.setattr(shapes, "_generate", lambda *a: pytest.fail("drawn again instead of read from the cache"))
        cached = shapes_split("train", 30)
    assert torch.equal(cached.images, fresh.images) and cached.captions == fresh.captions
    files[0].write_bytes(files[0].read_bytes()[:100])
    assert torch.equal(shapes_split("train", 30).images, fresh.images)


# --- bad input --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "expected"), [
    ("grean triangle", r"unknown word 'grean'.*did you mean 'green'.*colours: red, green"),
    ("green trapezoid", r"unknown word 'trapezoid'.*shapes: circle, square, triangle, star"),
    ("red green circle", r"two colours"),
    ("  ", r"empty held-out rule"),
])
def test_bad_held_out_rules(rule: str, expected: str) -> None:
    with pytest.raises(ShapesDataError, match=expected):
        parse_rule(rule)
    with pytest.raises(ShapesDataError):
        split(held_out=(rule,))


def test_bad_requests() -> None:
    with pytest.raises(ShapesDataError, match="unknown split 'tset_seen'.*did you mean 'test_seen'"):
        shapes_split("tset_seen", 4)
    with pytest.raises(ShapesDataError, match="seed must be a non-negative int"):
        shapes_split("train", 4, seed=-1)
    with pytest.raises(ShapesDataError, match="test_heldout needs held-out compositions"):
        split("test_heldout", 4, held_out=())
    with pytest.raises(ShapesDataError, match="two_object_fraction"):
        split(two_object_fraction=1.5)
    with pytest.raises(ShapesDataError, match="hold out every object"):
        split(held_out=("small", "large"))
    with pytest.warns(UserWarning, match=r"remove the colour\(s\) \['green'\] from training"):
        split(n=2, held_out=("green",))


# --- the data set --------------------------------------------------------------------------------------

def test_collate_normalises_and_keeps_captions_and_ids() -> None:
    data = split("train", 12)
    dataset = data.dataset()
    batch = next(iter(DataLoader(dataset, batch_size=5, collate_fn=dataset.collate)))
    assert torch.allclose(batch["pixel_values"], data.images[:5].float() / 127.5 - 1.0, atol=1e-6)
    assert batch["captions"] == data.captions[:5] and torch.equal(batch["caption_ids"], data.caption_ids[:5])


def test_collate_tokenizes_with_any_callable() -> None:
    data = split("train", 6)
    dataset = data.dataset(tokenizer=lambda text: [1, *text.encode(), 2], pad_id=0)
    batch = dataset.collate([dataset[i] for i in range(6)])
    assert set(batch) == {"pixel_values", "caption_ids", "input_ids", "attention_mask"}
    for row, mask, caption in zip(batch["input_ids"], batch["attention_mask"], data.captions[:6]):
        n = len(caption.encode()) + 2
        assert row[:n].tolist() == [1, *caption.encode(), 2] and mask.sum() == n and not row[n:].any()
    bad = data.dataset(tokenizer=lambda text: text.split())
    with pytest.raises(ShapesDataError, match="must return a non-empty list.*of int ids"):
        bad.collate([bad[0]])


def test_data_set_rejects_mismatched_input() -> None:
    data = split("train", 4)
    with pytest.raises(ShapesDataError, match="4 images, 3 captions"):
        CaptionedImageData(data.images, data.captions[:3], data.caption_ids[:3])
    with pytest.raises(ShapesDataError, match="uint8 tensor"):
        CaptionedImageData(data.images.float(), data.captions, data.caption_ids)


@needs_fashion
def test_fashion_captions_name_the_class_and_resize_like_pillow() -> None:
    pairs = fashion_captions("test", limit=64)
    assert all(shapes.FASHION_CAPTION_NAMES[c] in t for c, t in zip(pairs.labels.tolist(), pairs.captions))
    assert pairs.captions[0] == "a photo of an ankle boot"  # test captions are canonical: one template
    varied = fashion_captions("test", limit=64, paraphrase=True)
    assert varied.labels.equal(pairs.labels) and len(set(varied.captions)) > len(set(pairs.captions))
    assert all(shapes.FASHION_CAPTION_NAMES[c] in t for c, t in zip(varied.labels.tolist(), varied.captions))
    pixels = pairs.dataset(mean=(0.0,) * 3, std=(1.0,) * 3)[3]["pixel_values"]  # (3, 64, 64) in [0, 1]
    assert pixels.shape == (3, 64, 64) and torch.equal(pixels[0], pixels[2])
    pillow = np.asarray(Image.fromarray(pairs.images[3, 0].numpy()).resize((64, 64), Image.BILINEAR), dtype=np.float32)
    assert np.abs(pixels[0].numpy() * 255 - pillow).max() <= 2.0


def test_save_grid(tmp_path: Path) -> None:
    path = save_grid(split("train", 6), tmp_path / "grid.png", count=6, columns=3, scale=2)
    with Image.open(path) as image:
        assert image.width == 3 * (128 + 8) + 8 and image.height > 2 * 128
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save_grid(split("train", 2), tmp_path / "two.png", count=10).is_file()
