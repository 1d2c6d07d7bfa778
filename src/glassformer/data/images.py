"""Image data for the vision families: IDX files, image files, tensors, and a classification data set.

No torchvision (it would pull a multi-GB CUDA torch onto a CPU machine): IDX is parsed with
numpy, files are decoded with Pillow, and resizing and normalising are torch ops.

- **IDX** (:func:`read_idx`), the format of MNIST and Fashion-MNIST: a big-endian header
  (magic 2049 for labels, 2051 for images, then one uint32 per dimension) and uint8 values.
- **Data sets**, as ``(images uint8 (N, H, W), labels int64 (N,))``: Fashion-MNIST 60k/10k from
  Debian's ``dataset-fashion-mnist`` (:func:`load_fashion_mnist`, ``make fashion-mnist``), the
  MNIST test set from shared data (:func:`load_mnist_test`) and scikit-learn's 8x8 digits
  (:func:`load_digits`) for quick tests. :func:`train_val_split` holds out a validation part of a
  training set, for choosing checkpoints without looking at the test set.
- **Image files** (:func:`read_image`, :func:`load_image_folder`) and tensor helpers
  (:func:`to_tensor`, :func:`resize`, :func:`normalize`).
- :class:`ImageClassificationData`, a map-style data set for ``glassformer.train``: items are
  ``{"pixel_values": (C, H, W) float, "labels": int64}``; with augmentation, its :meth:`collate
  <ImageClassificationData.collate>` augments whole batches (see the class for the seeding).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from glassformer.utils.paths import data_file
from glassformer.utils.suggest import did_you_mean

IDX_MAGIC = {2049: 1, 2051: 3}  # magic -> number of dimensions (labels, images)
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = "run `make fashion-mnist` (Debian: apt-get install dataset-fashion-mnist)"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # of the 60k training images, in [0, 1]
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SPLIT_FILES = {"train": "train", "test": "t10k"}
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageDataError(ValueError):
    """An image or IDX file (or folder) cannot be used; the message names it and says what to do."""


# --- IDX ------------------------------------------------------------------------------------------

def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ImageDataError(f"{path}: no such file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ImageDataError(f"{path}: the gzip stream is damaged ({exc}); download or reinstall the file") from exc
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The uint8 array in an IDX file (gzip-compressed or raw): labels (N,) or images (N, H, W)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ImageDataError(f"{path}: {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in IDX_MAGIC:
        raise ImageDataError(
            f"{path}: IDX magic number {magic} (0x{magic:08x}), expected 2049 (labels) or 2051 (images); "
            "is this an IDX file (e.g. train-images-idx3-ubyte.gz)?"
        )
    ndim = IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ImageDataError(f"{path}: truncated header: expected {header} bytes, found {len(data)}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise ImageDataError(
            f"{path}: payload {what}: dimensions {dims} need {expected} bytes, found {found}; "
            "the file is damaged, download or reinstall it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """Images ``uint8 (N, H, W)`` and labels ``int64 (N,)`` from two IDX files whose counts must agree."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise ImageDataError(
            f"{images_path} / {labels_path}: expected an images file (3 dimensions) and a labels file (1), "
            f"got {images.ndim} and {labels.ndim} dimensions; are the two swapped?"
        )
    if images.shape[0] != labels.shape[0]:
        raise ImageDataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
            "the two files belong to different splits or one is damaged"
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


# --- data sets ------------------------------------------------------------------------------------

def load_fashion_mnist(split: str = "train", root: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST ``split`` ("train": 60,000, "test": 10,000) as uint8 (N, 28, 28) images and int64 labels.

    ``root`` defaults to ``$GLASSFORMER_FASHION_MNIST``, else Debian's ``/usr/share/datasets/fashion-mnist``.
    Class names: :data:`FASHION_MNIST_CLASSES`.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}{did_you_mean(split, _SPLIT_FILES)}")
    folder = Path(root if root is not None else os.environ.get("GLASSFORMER_FASHION_MNIST", FASHION_MNIST_DIR))
    stem = _SPLIT_FILES[split]
    images, labels = folder / f"{stem}-images-idx3-ubyte.gz", folder / f"{stem}-labels-idx1-ubyte.gz"
    missing = [p for p in (images, labels) if not p.is_file()]
    if missing:
        raise ImageDataError(
            f"Fashion-MNIST not found: {', '.join(map(str, missing))} missing; {FASHION_MNIST_HINT}, "
            "or set GLASSFORMER_FASHION_MNIST to a folder holding the four IDX files"
        )
    return read_idx_pair(images, labels)


def load_mnist_test(data_dir: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """The 10,000 MNIST test digits, from ``data_dir`` or ``$GLASSFORMER_DATA/mnist_test`` (shared data)."""
    folder = Path(data_dir) if data_dir is not None else data_file("mnist_test")
    if folder is None or not folder.is_dir():
        raise ImageDataError(
            f"the MNIST test set was not found{f' in {folder}' if folder is not None else ''}: set "
            "GLASSFORMER_DATA to the shared data folder holding mnist_test/ (see its SOURCES.md), or pass data_dir"
        )
    return read_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")


def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 1,797 8x8 digits as uint8 (N, 8, 8) images scaled from 0-16 to 0-255, int64 labels.

    Reads the ``digits.csv.gz`` that scikit-learn ships instead of importing it: library modules
    stay free of scikit-learn (docs/architecture.md), and the file is all ``load_digits`` uses.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImageDataError("the 8x8 digits come with scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise ImageDataError(f"{path}: scikit-learn's digits file is missing; reinstall scikit-learn")
    table = np.loadtxt(gzip.open(path, "rt"), delimiter=",", dtype=np.int64)  # (1797, 65): 64 pixels + label
    images = np.rint(table[:, :64].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    return torch.from_numpy(images), torch.from_numpy(table[:, 64].copy())


def train_val_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Sorted int64 index tensors ``(train, val)`` of a deterministic random split of ``range(n)``.

    The same ``(n, val_fraction, seed)`` always gives the same split, on every machine: select
    checkpoints on ``val``, and report the test set once at the end.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n_val == 0 or n_val == n:
        raise ValueError(f"val_fraction {val_fraction} of {n} samples leaves one side empty; use more samples")
    g = torch.Generator()
    g.manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


# --- image files ----------------------------------------------------------------------------------

def read_image(path: str | os.PathLike[str], mode: str = "L") -> Tensor:
    """An image file as uint8 ``(C, H, W)``: ``mode`` "L" gives C=1, "RGB" gives C=3.

    A file in another mode is converted, with a warning (e.g. a grayscale photo for a 3-channel
    model: the gray value is copied to all three channels).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' (grayscale) or 'RGB', got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise ImageDataError(f"{path}: no such image file")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != mode:
                gray = img.mode in _GRAY_MODES
                if gray != (mode == "L"):
                    what = "grayscale image: its gray value copied to 3 channels" if gray else "colour image: converted to grayscale"
                    warnings.warn(f"{path}: a {img.mode} {what} for mode {mode}", stacklevel=2)
                img = img.convert(mode)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDataError(f"{path}: not a readable image ({exc}); is the file damaged or not an image?") from exc
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


@dataclass
class ImageFolder:
    """The images of a folder: uint8 ``(C, H, W)`` tensors, their paths, and the files that failed."""

    images: list[Tensor]
    paths: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def stack(self) -> Tensor:
        """All images as one uint8 ``(N, C, H, W)`` tensor; they must share a size (pass ``size=``)."""
        shapes = {tuple(t.shape) for t in self.images}
        if len(shapes) > 1:
            raise ImageDataError(
                f"the images have {len(shapes)} different shapes ({sorted(shapes)[:3]} ...); "
                "load them with load_image_folder(..., size=N) to resize them to one size"
            )
        return torch.stack(self.images)


def load_image_folder(directory: str | os.PathLike[str], *, mode: str = "L",
                      size: int | tuple[int, int] | None = None) -> ImageFolder:
    """Every image file (by extension, :data:`IMAGE_EXTENSIONS`) directly in ``directory``, sorted by name.

    Files that cannot be decoded are skipped and listed in ``skipped`` (with a warning naming them);
    ``size`` resizes each image (bilinear, antialiased). A folder with no readable image is an error.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise ImageDataError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ImageDataError(f"{folder}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
    result = ImageFolder([], [])
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # one note per folder, below, rather than one per file
                image = read_image(path, mode)
        except ImageDataError as exc:
            result.skipped.append((path, str(exc)))
            continue
        result.images.append(resize(image, size) if size is not None else image)
        result.paths.append(path)
    if result.skipped:
        names = ", ".join(p.name for p, _ in result.skipped)
        if not result.images:
            raise ImageDataError(f"{folder}: none of the {len(files)} image files could be read ({names})")
        warnings.warn(f"{folder}: skipped {len(result.skipped)} unreadable file(s): {names}", stacklevel=2)
    return result


# --- tensors ----------------------------------------------------------------------------------------

def to_tensor(image: Any) -> Tensor:
    """Float32 in [0, 1] from a PIL image, a uint8 array (H, W) / (H, W, C), or a uint8 tensor (..., C, H, W)."""
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(f"to_tensor: expected a uint8 tensor (values 0-255), got {image.dtype}")
        return image.float() / 255.0
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"to_tensor: expected a uint8 image (H, W) or (H, W, C), got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(array.copy()).float() / 255.0
    return tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1).contiguous()


def resize(images: Tensor, size: int | tuple[int, int], mode: str = "bilinear", antialias: bool = True) -> Tensor:
    """Resize ``(C, H, W)`` or ``(B, C, H, W)`` images to ``size`` (int: square) with torch interpolation.

    ``mode`` is "bilinear" or "bicubic"; ``antialias`` (on when shrinking) matches Pillow's filters
    to within one grey level. uint8 in, uint8 out (rounded and clipped: bicubic overshoots).
    """
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"resize: mode must be 'bilinear' or 'bicubic', got {mode!r}{did_you_mean(mode, ['bilinear', 'bicubic'])}")
    if images.dim() not in (3, 4):
        raise ValueError(f"resize: expected images (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
    target = (size, size) if isinstance(size, int) else tuple(size)
    x = images.unsqueeze(0) if images.dim() == 3 else images
    out = F.interpolate(x.float(), size=target, mode=mode, align_corners=False, antialias=antialias)
    if images.dtype == torch.uint8:
        out = out.round().clamp(0, 255).to(torch.uint8)
    return out[0] if images.dim() == 3 else out


def normalize(images: Tensor, mean: Sequence[float] | float, std: Sequence[float] | float) -> Tensor:
    """``(images - mean) / std`` per channel, for float images ``(C, H, W)`` or ``(B, C, H, W)``."""
    if not images.is_floating_point():
        raise ValueError(f"normalize: expected float images in [0, 1], got {images.dtype}; call to_tensor first")
    channels = images.shape[-3]
    m = torch.as_tensor(mean, dtype=images.dtype).reshape(-1)
    s = torch.as_tensor(std, dtype=images.dtype).reshape(-1)
    for name, v in (("mean", m), ("std", s)):
        if v.numel() not in (1, channels):
            raise ValueError(f"normalize: {name} has {v.numel()} values for images with {channels} channels")
    if bool((s <= 0).any()):
        raise ValueError(f"normalize: std must be positive, got {s.tolist()}")
    return (images - m[:, None, None]) / s[:, None, None]


# --- the data set -----------------------------------------------------------------------------------

def _pad_center(images: Tensor, pad_to: int) -> Tensor:
    """Zero-pad (N, C, H, W) images to pad_to x pad_to, centred (e.g. 28 -> 32 for patches of 8)."""
    _, _, h, w = images.shape
    if pad_to < max(h, w):
        raise ValueError(f"pad_to={pad_to} is smaller than the {h}x{w} images; pad_to only pads")
    top, left = (pad_to - h) // 2, (pad_to - w) // 2
    return F.pad(images, (left, pad_to - w - left, top, pad_to - h - top))


def _batch_generator(seed: int, indices: Tensor) -> torch.Generator:
    """A generator that is a pure function of the seed and the batch's ordered sample indices."""
    words = np.random.SeedSequence([seed % 2**32, *indices.tolist()]).generate_state(2, np.uint32)
    g = torch.Generator()
    g.manual_seed((int(words[0]) << 31) ^ int(words[1]))
    return g


class ImageClassificationData(Dataset):
    """Labelled uint8 images as ``{"pixel_values": float (C, H, W), "labels": int64}`` items.

    ``images_uint8``: (N, H, W) or (N, C, H, W); ``labels``: (N,) class ids. ``mean``/``std``
    normalise the [0, 1] pixels per channel; ``pad_to`` zero-pads to a square size once, up front.

    Augmentation (``augment``: a transform of ``glassformer.data.augment``; ``mix``: a batch mixer
    such as ``RandomMix``, which makes ``labels`` soft, float ``(B, n_classes)``) runs in
    :meth:`collate`, on the whole batch at once, before normalising: pass
    ``collate_fn=data.collate`` to the ``Trainer``. Its generator is seeded from ``seed`` and the
    batch's ordered sample indices. The trainer's batches are a pure function of ``(seed, m)``
    (a fresh permutation per epoch), so the augmentation is too: the same on a resumed run, with
    any ``num_workers``, different on every DDP process and in every epoch, without any state the
    trainer would have to save. (Seeding by epoch + index would need the trainer to tell the data
    set its epoch, which it does not.) Items of an augmenting data set carry ``sample_index`` for
    this; batched with another collate function the model receives it as an unexpected keyword.
    A data set without augmentation (an eval set) yields plain items for ``default_collate``, and
    its ``collate`` is ``default_collate``, so one collate function serves train and eval sets.
    """

    def __init__(self, images_uint8: Tensor, labels: Tensor, *, augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
                 mix: Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]] | None = None,
                 mean: Sequence[float], std: Sequence[float], pad_to: int | None = None, seed: int = 0) -> None:
        if not isinstance(images_uint8, Tensor) or images_uint8.dtype != torch.uint8 or images_uint8.dim() not in (3, 4):
            got = f"{images_uint8.dtype} {tuple(images_uint8.shape)}" if isinstance(images_uint8, Tensor) else type(images_uint8).__name__
            raise ValueError(f"ImageClassificationData: images must be a uint8 tensor (N, H, W) or (N, C, H, W), got {got}")
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.shape[0] != images_uint8.shape[0] or labels.is_floating_point():
            raise ValueError(
                f"ImageClassificationData: labels must be integer class ids (N,) with N = {images_uint8.shape[0]} "
                f"images, got {labels.dtype} {tuple(labels.shape)}"
            )
        images = images_uint8[:, None] if images_uint8.dim() == 3 else images_uint8  # (N, C, H, W)
        self.images = _pad_center(images, pad_to) if pad_to is not None else images
        self.labels = labels.long()
        self.augment, self.mix, self.seed = augment, mix, seed
        self.mean, self.std = tuple(mean), tuple(std)
        normalize(torch.zeros(self.images.shape[1], 1, 1), self.mean, self.std)  # check mean/std against C now
        # (x / 255 - mean) / std as one multiply-add per pixel, for the per-item path
        channels = self.images.shape[1]
        self._scale = (1.0 / (255.0 * torch.tensor(self.std).expand(channels))).reshape(-1, 1, 1)  # (C, 1, 1)
        self._shift = (-torch.tensor(self.mean).expand(channels) / torch.tensor(self.std).expand(channels)).reshape(-1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """A plain item ``{"pixel_values": float (C, H, W), "labels"}``; raw for an augmenting set (see the class)."""
        if self.augment is not None or self.mix is not None:
            # collate re-reads the uint8 pixels of the whole batch; the item only says which sample it is
            return {"pixel_values": self.images[index], "labels": self.labels[index], "sample_index": int(index)}
        pixels = torch.addcmul(self._shift, self.images[index].float(), self._scale)  # (C, H, W)
        return {"pixel_values": pixels, "labels": self.labels[index]}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Tensor]:
        """A batch ``{"pixel_values": (B, C, H, W), "labels": (B,) or (B, n_classes)}``, augmented when set up so."""
        if not items or "sample_index" not in items[0]:
            return default_collate(items)
        indices = torch.tensor([item["sample_index"] for item in items])
        g = _batch_generator(self.seed, indices)
        x = self.images[indices].float() / 255.0  # (B, C, H, W) in [0, 1]
        labels = self.labels[indices]
        if self.augment is not None:
            x = self.augment(x, g)
        if self.mix is not None:
            x, labels = self.mix(x, labels, g)
        return {"pixel_values": normalize(x, self.mean, self.std), "labels": labels}


# --- the training command's data builder ---------------------------------------------------------

FASHION_OPTIONS = {
    "root": "folder with the Fashion-MNIST IDX files (default: the Debian package's)",
    "val_fraction": "share of the training images held out to choose the best checkpoint (default 1/12: 5,000)",
    "augment": "crop_flip (default), randaugment (crop, flip and RandAugmentLite) or none",
    "mix": "mixup/cutmix soft labels (default false)",
    "seed": "the split's and the augmentation's seed (default 0)",
}


def fashion_mnist_sets(*, root: str | os.PathLike[str] | None = None, val_fraction: float = 5000 / 60000,
                       augment: str = "crop_flip", mix: bool = False, seed: int = 0,
                       ) -> tuple[ImageClassificationData, ImageClassificationData]:
    """The augmented training images and the held-out validation images of Fashion-MNIST's train split.

    The test split is never here: it is scored once, with the checkpoint the validation set chose.
    """
    from glassformer.data.augment import Compose, RandAugmentLite, RandomCrop, RandomHorizontalFlip, RandomMix

    policies = {
        "none": None,
        "crop_flip": Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(0.5)]),
        "randaugment": Compose([RandomCrop(28, padding=2), RandomHorizontalFlip(0.5), RandAugmentLite(2, 9.0)]),
    }
    if augment not in policies:
        raise ValueError(f"augment={augment!r} is not a policy{did_you_mean(augment, policies)}; choose one of {sorted(policies)}")
    images, labels = load_fashion_mnist("train", root)
    train_idx, val_idx = train_val_split(len(labels), val_fraction, seed)
    stats = {"mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD}
    train = ImageClassificationData(images[train_idx], labels[train_idx], augment=policies[augment],
                                    mix=RandomMix(len(FASHION_MNIST_CLASSES)) if mix else None, seed=seed, **stats)
    return train, ImageClassificationData(images[val_idx], labels[val_idx], **stats)


def fashion_mnist_data(train_config: Any, model_config: Any, request: Any) -> tuple[ImageClassificationData, ImageClassificationData]:
    """``glassformer train vit-fashion``'s data: :func:`fashion_mnist_sets` with the ``data.KEY=...`` options.

    The training set carries its batch-augmenting ``collate``, which the engine picks up."""
    from glassformer.utils.config import unknown_keys_message

    options = dict(request.options)
    unknown = sorted(set(options) - set(FASHION_OPTIONS))
    if unknown:
        raise ValueError("unknown data option: " + unknown_keys_message(unknown, sorted(FASHION_OPTIONS), "Fashion-MNIST data"))
    channels = getattr(model_config, "in_channels", 1)
    if channels != 1 or getattr(model_config, "image_size", 28) != 28:
        raise ValueError(
            f"Fashion-MNIST images are 28x28 grayscale; the model expects {getattr(model_config, 'image_size', '?')}px "
            f"with {channels} channels: train the vit-fashion preset (or set image_size=28, in_channels=1)"
        )
    mix = str(options.get("mix", "false")).lower() in ("1", "true", "yes")
    return fashion_mnist_sets(root=options.get("root"), val_fraction=float(options.get("val_fraction", 5000 / 60000)),
                              augment=str(options.get("augment", "crop_flip")), mix=mix, seed=int(options.get("seed", 0)))
