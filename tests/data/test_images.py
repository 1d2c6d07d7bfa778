"""Image data: IDX files and their errors, the data sets, image files, tensor helpers, the data set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glassformer.data.augment import Compose, RandomCrop, RandomHorizontalFlip, RandomMix
from glassformer.data.images import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    ImageClassificationData,
    ImageDataError,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    load_mnist_test,
    normalize,
    read_idx,
    read_idx_pair,
    read_image,
    resize,
    to_tensor,
    train_val_split,
)
from glassformer.train.data import ShuffledBatches
from glassformer.utils.paths import data_file

needs_fashion = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST missing: run `make fashion-mnist`",
)
needs_mnist = pytest.mark.skipif(data_file("mnist_test") is None, reason="mnist_test not found: set GLASSFORMER_DATA")


def write_idx(path: Path, array: np.ndarray, magic: int | None = None, cut: int = 0) -> Path:
    """An IDX file of ``array`` (gzip when the name ends in .gz), optionally ``cut`` bytes short."""
    magic = magic if magic is not None else {1: 2049, 3: 2051}[array.ndim]
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.astype(np.uint8).tobytes()
    raw = raw[: len(raw) - cut]
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def small_set(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 4, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


# --- IDX ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    images, labels = small_set()
    ip = write_idx(tmp_path / f"i-idx3-ubyte{suffix}", images)
    lp = write_idx(tmp_path / f"l-idx1-ubyte{suffix}", labels)
    assert np.array_equal(read_idx(ip), images) and np.array_equal(read_idx(lp), labels)
    x, y = read_idx_pair(ip, lp)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images)) and torch.equal(y, torch.from_numpy(labels).long())


def test_idx_wrong_magic_says_what_it_found_and_expected(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "bad.gz", small_set()[0], magic=2052)
    with pytest.raises(ImageDataError, match=r"bad\.gz: IDX magic number 2052 .*expected 2049 \(labels\) or 2051"):
        read_idx(path)


def test_idx_truncated_payload_counts_the_bytes(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "short-idx3-ubyte", small_set()[0], cut=7)
    with pytest.raises(ImageDataError, match=r"short-idx3-ubyte: payload truncated: .* need 60 bytes, found 53"):
        read_idx(path)


def test_idx_count_mismatch_and_missing_file_name_the_files(tmp_path: Path) -> None:
    images, _ = small_set(5)
    _, labels = small_set(4)
    ip, lp = write_idx(tmp_path / "imgs.gz", images), write_idx(tmp_path / "labs.gz", labels)
    with pytest.raises(ImageDataError, match=r"imgs\.gz has 5 images but .*labs\.gz has 4 labels"):
        read_idx_pair(ip, lp)
    with pytest.raises(ImageDataError, match=r"nothere\.gz: no such file"):
        read_idx(tmp_path / "nothere.gz")


def test_fashion_mnist_from_an_override_folder_and_a_missing_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = small_set(3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("GLASSFORMER_FASHION_MNIST", str(tmp_path))
    x, _ = load_fashion_mnist("test")
    assert torch.equal(x, torch.from_numpy(images))
    with pytest.raises(ImageDataError, match="make fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(ValueError, match="did you mean 'test'"):
        load_fashion_mnist("tset")


@needs_fashion
def test_fashion_mnist_full_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLASSFORMER_FASHION_MNIST", raising=False)
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_fashion_mnist(split)
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8 and y.shape == (n,) and y.dtype == torch.int64
        assert y.bincount().tolist() == [n // 10] * 10
    assert len(FASHION_MNIST_CLASSES) == 10


@needs_mnist
def test_mnist_test_set() -> None:
    x, y = load_mnist_test()
    assert x.shape == (10000, 28, 28)
    assert y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_equal_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sk_digits

    ref = sk_digits()
    x, y = load_digits()
    assert x.shape == (1797, 8, 8) and x.dtype == torch.uint8
    assert np.array_equal(x.numpy(), np.rint(ref.images * 255 / 16).astype(np.uint8))
    assert np.array_equal(y.numpy(), ref.target)


def test_train_val_split_is_deterministic_and_disjoint() -> None:
    train, val = train_val_split(1000, 0.1, seed=3)
    again, val_again = train_val_split(1000, 0.1, seed=3)
    assert torch.equal(train, again) and torch.equal(val, val_again)
    assert len(val) == 100 and torch.equal(torch.cat([train, val]).sort().values, torch.arange(1000))
    assert not torch.equal(val, train_val_split(1000, 0.1, seed=4)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        train_val_split(10, 1.0)


# --- image files ------------------------------------------------------------------------------------

def test_read_image_modes_and_grayscale_to_rgb_note(tmp_path: Path) -> None:
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    assert torch.equal(read_image(tmp_path / "g.png"), torch.from_numpy(gray)[None])
    with pytest.warns(UserWarning, match="gray value copied to 3 channels"):
        rgb = read_image(tmp_path / "g.png", mode="RGB")
    assert rgb.shape == (3, 4, 5) and all(torch.equal(c, rgb[0]) for c in rgb)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageDataError, match=r"broken\.png: not a readable image"):
        read_image(tmp_path / "broken.png")


def test_image_folder_skips_and_lists_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ImageDataError, match="no image files"):
        load_image_folder(tmp_path)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 4, 3), 200, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "c.png").write_bytes(b"garbage")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): c\.png"):
        folder = load_image_folder(tmp_path, size=5)
    assert [p.name for p in folder.paths] == ["a.png", "b.jpg"] and folder.skipped[0][0].name == "c.png"
    assert folder.stack().shape == (2, 1, 5, 5)
    with pytest.warns(UserWarning), pytest.raises(ImageDataError, match="different shapes"):
        load_image_folder(tmp_path).stack()
    for name in ("a.png", "b.jpg"):
        (tmp_path / name).unlink()
    with pytest.raises(ImageDataError, match=r"none of the 1 image files could be read \(c\.png\)"):
        load_image_folder(tmp_path)


# --- tensor helpers ---------------------------------------------------------------------------------

def test_resize_matches_pillow_within_one_grey_level() -> None:
    array = np.random.default_rng(0).integers(0, 256, (37, 41), dtype=np.uint8)
    ours = resize(torch.from_numpy(array)[None], (18, 20))[0].numpy().astype(int)
    pil = np.asarray(Image.fromarray(array).resize((20, 18), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() <= 1
    up = resize(torch.from_numpy(array)[None], 64, mode="bicubic")
    assert up.shape == (1, 64, 64) and up.dtype == torch.uint8


def test_to_tensor_and_normalize_match_transformers() -> None:
    from transformers.image_transforms import normalize as hf_normalize

    array = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    x = to_tensor(array)
    assert x.shape == (3, 5, 6) and torch.equal(x, to_tensor(Image.fromarray(array)))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ref = hf_normalize(x.numpy(), mean, std, input_data_format="channels_first")
    torch.testing.assert_close(normalize(x, mean, std), torch.from_numpy(ref))
    with pytest.raises(ValueError, match="mean has 2 values for images with 3 channels"):
        normalize(x, (0.5, 0.5), (1.0,))


# --- the data set ------------------------------------------------------------------------------------

def fake_data(n: int = 12, **kw: object) -> ImageClassificationData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 8, 8), dtype=torch.uint8, generator=g)
    return ImageClassificationData(images, torch.arange(n) % 3, mean=(0.5,), std=(0.25,), **kw)


def test_plain_items_and_padding() -> None:
    data = fake_data(pad_to=10)
    item = data[3]
    assert set(item) == {"pixel_values", "labels"} and item["pixel_values"].shape == (1, 10, 10)
    assert item["pixel_values"].dtype == torch.float32 and item["labels"].dtype == torch.int64
    torch.testing.assert_close(item["pixel_values"][:, 1:-1, 1:-1], (data.images[3, :, 1:-1, 1:-1] / 255 - 0.5) / 0.25)
    assert torch.all(item["pixel_values"][:, 0] == -2.0)  # zero padding, normalised
    batch = data.collate([data[0], data[1]])
    assert batch["pixel_values"].shape == (2, 1, 10, 10) and batch["labels"].tolist() == [0, 1]


def test_augmented_batches_are_a_function_of_their_indices() -> None:
    data = fake_data(augment=Compose([RandomCrop(8, 2), RandomHorizontalFlip()]), mix=RandomMix(3))
    first = data.collate([data[i] for i in (4, 1, 7)])
    again = data.collate([data[i] for i in (4, 1, 7)])
    other = data.collate([data[i] for i in (1, 4, 7)])
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["labels"], again["labels"])
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    # the same image in the same place of two different batches is augmented differently
    crops = fake_data(augment=RandomCrop(8, 2))
    same = [torch.equal(crops.collate([crops[i], crops[10]])["pixel_values"][0],
                        crops.collate([crops[i], crops[11]])["pixel_values"][0]) for i in range(10)]
    assert not all(same)
    assert set(first) == {"pixel_values", "labels"} and first["labels"].shape == (3, 3)
    torch.testing.assert_close(first["labels"].sum(1), torch.ones(3))


def test_trainer_stream_replays_the_same_augmented_batches_on_resume() -> None:
    data = fake_data(augment=RandomCrop(8, 2))
    kw = dict(batch_size=4, grad_accum_steps=1, rank=0, world_size=1, seed=5, collate_fn=data.collate)
    run = ShuffledBatches(data, **kw)
    batches = [next(run)["pixel_values"] for _ in range(6)]  # two epochs of three steps
    resumed = ShuffledBatches(data, **kw)
    resumed.load_state_dict({"position": 4})
    assert torch.equal(next(resumed)["pixel_values"], batches[4])
    assert not torch.equal(batches[0], batches[3])


def test_bad_data_set_input_is_named() -> None:
    with pytest.raises(ValueError, match="images must be a uint8 tensor"):
        ImageClassificationData(torch.zeros(2, 4, 4), torch.zeros(2, dtype=torch.long), mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="labels must be integer class ids"):
        ImageClassificationData(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(3), mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="mean has 3 values for images with 1 channels"):
        ImageClassificationData(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long),
                                mean=(0.5, 0.5, 0.5), std=(0.5,))
