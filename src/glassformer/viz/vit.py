"""Looking inside a vision transformer: [CLS] attention per head, attention rollout, and pictures of both.

A ViT's sequence is ``[CLS]`` followed by the image's patches in row-major order, so row 0 of a
layer's attention says where the classification token looks. Two views come from that:

* :func:`cls_attention_maps`: one layer's ``[CLS]`` row, per head, folded back into the patch grid.
* :func:`attention_rollout` (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
  a single layer's weights ignore that information also flows along the residual connection and
  through earlier layers. Rollout averages the heads, adds the identity for the residual path,
  re-normalises each row, and multiplies the layers together, giving how much of each input token
  ends up in each output token.

Fused attention (SDPA, flash) never forms the weights, so :func:`vit_attentions` switches every
attention module to the eager path for the one forward it runs and asks for the weights. The
picture functions (matplotlib, Agg) lay the upsampled maps over the image.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.utils.suggest import did_you_mean
from glassformer.viz.figures import pyplot, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from glassformer.models.vit.config import ViTConfig

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


# --- the numbers -------------------------------------------------------------------------------------


def _stack_layers(attentions: Sequence[Tensor] | Tensor) -> Tensor:
    """Per-layer ``(B, H, T, T)`` weights as one float64 ``(L, B, H, T, T)`` tensor, checked."""
    if isinstance(attentions, Tensor | np.ndarray) and np.ndim(attentions) == 5:
        attentions = list(attentions)
    if not isinstance(attentions, Sequence) or len(attentions) == 0:
        raise ValueError(
            "attentions must be a non-empty sequence with one (batch, heads, T, T) tensor per layer; "
            "run the model with output_attentions=True (see vit_attentions)"
        )
    layers = []
    for i, a in enumerate(attentions):
        t = torch.as_tensor(a).detach().to("cpu", torch.float64)
        if t.ndim != 4 or t.shape[-1] != t.shape[-2]:
            raise ValueError(
                f"attention of layer {i} has shape {tuple(t.shape)}; expected (batch, heads, T, T)"
            )
        if layers and t.shape != layers[0].shape:
            raise ValueError(
                f"layer {i} attention has shape {tuple(t.shape)} but layer 0 has {tuple(layers[0].shape)}"
            )
        layers.append(t)
    out = torch.stack(layers)  # (L, B, H, T, T)
    if not torch.isfinite(out).all() or (out < 0).any():
        raise ValueError("attention weights must be finite and non-negative (softmax outputs)")
    return out


def _fuse_heads(layer: Tensor, head_fusion: str) -> Tensor:
    """``(B, H, T, T) -> (B, T, T)``: one attention matrix per image from the layer's heads."""
    if head_fusion == "mean":
        return layer.mean(dim=1)
    if head_fusion == "max":
        return layer.amax(dim=1)
    if head_fusion == "min":
        return layer.amin(dim=1)
    raise ValueError(
        f"unknown head_fusion {head_fusion!r}; expected one of {HEAD_FUSIONS}"
        f"{did_you_mean(head_fusion, HEAD_FUSIONS)}"
    )


def _discard_lowest(a: Tensor, ratio: float) -> Tensor:
    """Zero the ``ratio`` weakest weights of each row, never the [CLS] column (the noise filter of vit-explain)."""
    t = a.shape[-1]
    n = int(ratio * (t - 1))
    if n == 0:
        return a
    patches = a[..., 1:]  # (B, T, T-1): the [CLS] column stays
    drop = patches.topk(n, dim=-1, largest=False).indices
    kept = patches.scatter(-1, drop, 0.0)
    return torch.cat([a[..., :1], kept], dim=-1)


def attention_rollout(
    attentions: Sequence[Tensor] | Tensor,
    *,
    head_fusion: HeadFusion = "mean",
    add_residual: bool = True,
    discard_ratio: float = 0.0,
) -> Tensor:
    """Attention rollout ``(B, T, T)``: row ``i`` says how much of each input token reaches output token ``i``.

    Per layer: fuse the heads (``mean`` as in the paper; ``max``/``min`` as in vit-explain), zero
    the ``discard_ratio`` weakest entries of each row (keeping the [CLS] column), add the identity
    for the residual connection (``add_residual``), re-normalise the rows to sum to 1; then
    multiply the layers from the last down to the first: ``R = A_L @ ... @ A_1``.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(
            f"discard_ratio={discard_ratio} must be in [0, 1): it is the fraction of each row zeroed"
        )
    stacked = _stack_layers(attentions)  # (L, B, H, T, T)
    t = stacked.shape[-1]
    eye = torch.eye(t, dtype=stacked.dtype)
    rollout = eye.expand(stacked.shape[1], t, t)  # (B, T, T)
    for layer in stacked:
        a = _discard_lowest(_fuse_heads(layer, head_fusion), discard_ratio)  # (B, T, T)
        if add_residual:
            a = a + eye
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        rollout = a @ rollout  # later layers on the left
    return rollout.float()


def patch_grid(n_tokens: int, *, n_prefix: int = 1) -> int:
    """Side of the square patch grid behind ``n_tokens`` tokens (``n_prefix`` of them not patches, e.g. [CLS])."""
    n = n_tokens - n_prefix
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise ValueError(
            f"{n_tokens} tokens less {n_prefix} prefix ([CLS]) leave {n} patches, not a square grid; "
            f"expected T = {n_prefix} + (image_size / patch_size) ** 2"
        )
    return side


def _reader_row(weights: Tensor, n_prefix: int) -> Tensor:
    """``(..., T, T) -> (..., N)``: what the classifier's token reads from each patch.

    With a [CLS] token (``n_prefix=1``) that is its row; with mean pooling (``n_prefix=0``) the
    classifier reads the mean of all tokens, so the mean of all rows."""
    reader = weights[..., 0, :] if n_prefix else weights.mean(dim=-2)
    return reader[..., n_prefix:]


def cls_attention_maps(
    attentions: Sequence[Tensor] | Tensor, layer: int = -1, *, n_prefix: int = 1
) -> Tensor:
    """Where [CLS] looks in ``layer``, per head: ``(B, H, grid, grid)`` over the patches (row-major).

    ``n_prefix=0`` (a mean-pooled ViT, no [CLS]): the mean over all query tokens instead."""
    stacked = _stack_layers(attentions)
    n_layers = stacked.shape[0]
    if not -n_layers <= layer < n_layers:
        raise ValueError(
            f"layer={layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})"
        )
    weights = stacked[layer]  # (B, H, T, T)
    side = patch_grid(weights.shape[-1], n_prefix=n_prefix)
    return _reader_row(weights, n_prefix).reshape(*weights.shape[:2], side, side).float()


def rollout_cls_map(rollout: Tensor, *, n_prefix: int = 1) -> Tensor:
    """The [CLS] row of a rollout ``(B, T, T)`` over the patches: ``(B, grid, grid)`` (mean row if no [CLS])."""
    if rollout.ndim != 3:
        raise ValueError(
            f"rollout has shape {tuple(rollout.shape)}; expected (batch, T, T) from attention_rollout"
        )
    side = patch_grid(rollout.shape[-1], n_prefix=n_prefix)
    return _reader_row(rollout, n_prefix).reshape(rollout.shape[0], side, side)


# --- running the model ------------------------------------------------------------------------------


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Every attention module of ``model`` on the eager path (the only one that forms weights), then back."""
    saved = [(m, m.backend) for m in model.modules() if isinstance(getattr(m, "backend", None), str)]
    try:
        for m, _ in saved:
            m.backend = "eager"
        yield model
    finally:
        for m, backend in saved:
            m.backend = backend


def _weights_flag(model: nn.Module) -> str:
    """The keyword the model's forward takes to return attention weights."""
    params = inspect.signature(model.forward).parameters
    for name in ("output_attentions", "return_weights"):
        if name in params:
            return name
    raise TypeError(
        f"{type(model).__name__}.forward takes neither output_attentions nor return_weights; "
        "it cannot return attention weights"
    )


def vit_attentions(model: nn.Module, pixel_values: Tensor) -> tuple[list[Tensor], Tensor | None]:
    """One eager forward of ``pixel_values (B, C, H, W)``: ``(per-layer (B, H, T, T) weights, logits)``.

    ``logits`` is None for a model without a classification head."""
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values has shape {tuple(pixel_values.shape)}; expected (batch, channels, H, W)"
        )
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad():
            out = model(pixel_values.to(param.device, param.dtype), **{_weights_flag(model): True})
    finally:
        model.train(was_training)
    if not out.attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights with output_attentions=True")
    logits = None if out.logits is None else out.logits.float().cpu()
    return [a.float().cpu() for a in out.attentions], logits


def _prefix_tokens(model: nn.Module) -> int:
    """[CLS]-like tokens before the patches: the config says, else assume the usual one [CLS]."""
    return int(getattr(getattr(model, "config", None), "num_prefix_tokens", 1))


# --- pictures ---------------------------------------------------------------------------------------


def display_image(pixel_values: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` model input as something ``imshow`` draws: ``(H, W)`` or ``(H, W, 3)`` in [0, 1].

    Each channel is stretched to [0, 1], which undoes any per-channel normalisation up to contrast."""
    if pixel_values.ndim != 3 or pixel_values.shape[0] not in (1, 3):
        raise ValueError(f"image has shape {tuple(pixel_values.shape)}; expected (1 or 3 channels, H, W)")
    x = pixel_values.detach().float().cpu()
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def upsample_map(grid_map: Tensor, size: tuple[int, int]) -> np.ndarray:
    """A ``(grid, grid)`` patch map resized bilinearly to the image's ``(H, W)`` and stretched to [0, 1]."""
    m = grid_map.detach().float().cpu()[None, None]  # (1, 1, g, g)
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    m = m - m.min()
    return (m / m.max().clamp_min(1e-12)).numpy()


def _overlay(ax: Axes, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0.0, vmax=1.0)
    ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_head_overlays(
    pixel_values: Tensor,
    attentions: Sequence[Tensor],
    path: str | os.PathLike[str],
    *,
    layer: int = -1,
    n_prefix: int = 1,
    batch_index: int = 0,
    title: str | None = None,
) -> Path:
    """The image, its rollout, then each head's [CLS] attention in ``layer``, each laid over the image."""
    image = display_image(pixel_values[batch_index])
    size = image.shape[:2]
    heads = cls_attention_maps(attentions, layer, n_prefix=n_prefix)[batch_index]  # (H, g, g)
    rollout = rollout_cls_map(attention_rollout(attentions), n_prefix=n_prefix)[batch_index]  # (g, g)
    n = len(heads) + 2
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image, cmap="gray" if image.ndim == 2 else None)
    axes.flat[0].set_title("image", fontsize=8)
    _overlay(axes.flat[1], image, upsample_map(rollout, size), "rollout (all layers)")
    n_layers = len(attentions)
    for h, grid_map in enumerate(heads):
        _overlay(axes.flat[h + 2], image, upsample_map(grid_map, size), f"layer {layer % n_layers} head {h}")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, tight=True)


def plot_rollout_overlay(
    pixel_values: Tensor,
    attentions: Sequence[Tensor],
    path: str | os.PathLike[str],
    *,
    n_prefix: int = 1,
    batch_index: int = 0,
    title: str | None = None,
) -> Path:
    """The image beside its attention rollout laid over it (one picture, two panels)."""
    image = display_image(pixel_values[batch_index])
    rollout = rollout_cls_map(attention_rollout(attentions), n_prefix=n_prefix)[batch_index]
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(5.0, 2.8))
    left.imshow(image, cmap="gray" if image.ndim == 2 else None)
    left.set_title("image", fontsize=8)
    left.axis("off")
    _overlay(right, image, upsample_map(rollout, image.shape[:2]), "attention rollout")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, tight=True)


def pick_per_class(labels: Sequence[int] | Tensor, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` examples of each class, class by class (ascending label)."""
    labels = [int(v) for v in labels]
    chosen: list[int] = []
    for cls in sorted(set(labels)):
        chosen += [i for i, v in enumerate(labels) if v == cls][:per_class]
    return chosen


def plot_class_grid(
    model: nn.Module,
    pixel_values: Tensor,
    labels: Sequence[int] | Tensor,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] = (),
    per_class: int = 3,
) -> Path:
    """A grid with one row per class: ``per_class`` test images, each with its rollout and the model's guess."""
    if len(pixel_values) != len(labels):
        raise ValueError(f"{len(pixel_values)} images but {len(labels)} labels: give one label per image")
    chosen = pick_per_class(labels, per_class)
    images = pixel_values[chosen]
    attentions, logits = vit_attentions(model, images)
    if logits is None:
        raise ValueError("this ViT has no classification head (num_labels=0): the grid shows its guesses")
    maps = rollout_cls_map(attention_rollout(attentions), n_prefix=_prefix_tokens(model))  # (N, g, g)
    guesses = logits.argmax(-1).tolist()
    label_list = [int(labels[i]) for i in chosen]
    classes = sorted(set(label_list))
    plt = pyplot()
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(1.9 * per_class, 2.3 * len(classes)), squeeze=False
    )
    fig.subplots_adjust(hspace=0.45, wspace=0.1)  # room for the two-line titles
    for ax in axes.flat:
        ax.axis("off")
    filled = {cls: 0 for cls in classes}
    for k, (label, guess) in enumerate(zip(label_list, guesses, strict=True)):
        ax = axes[classes.index(label), filled[label]]
        filled[label] += 1
        image = display_image(images[k])
        mark = "" if guess == label else " (wrong)"
        _overlay(
            ax,
            image,
            upsample_map(maps[k], image.shape[:2]),
            f"{_name(label, class_names)}\nguess: {_name(guess, class_names)}{mark}",
        )
    return save_figure(fig, path, tight=True)


def _name(index: int, class_names: Sequence[str]) -> str:
    return class_names[index] if 0 <= index < len(class_names) else str(index)


def top_k_classes(
    logits: Tensor, class_names: Sequence[str] = (), k: int = 3
) -> list[list[tuple[str, float]]]:
    """Per image, the ``k`` likeliest classes as ``(name, probability)``; names are indices when none are stored."""
    probs = logits.float().softmax(dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [
        [(_name(i, class_names), p) for i, p in zip(row_i, row_p, strict=True)]
        for row_i, row_p in zip(indices.tolist(), values.tolist(), strict=True)
    ]


# --- images from files, for a checkpoint (the `classify` and `attention` verbs) ----------------------

PREPROCESSOR_FILE = "preprocessor_config.json"  # Hugging Face's name; its image_mean / image_std are read
HF_VIT_MEAN_STD = (0.5, 0.5)  # ViTImageProcessor's default for colour models, per channel


def is_vit_checkpoint(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a model folder (glassformer's or Hugging Face's) holding a ViT."""
    from glassformer.utils.weights import CONFIG_NAME, read_config

    folder = Path(source)
    if not (folder / CONFIG_NAME).is_file():
        return False
    config = read_config(folder)
    return config.family == "vit" or config.model_type == "vit"


def image_stats(
    folder: str | os.PathLike[str], in_channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the model's inputs were normalised with.

    From ``preprocessor_config.json`` in the folder when there is one (``image_mean``,
    ``image_std``); else Fashion-MNIST's statistics for a grayscale model (what the Fashion-MNIST
    experiment trains with) and Hugging Face ViT's 0.5 / 0.5 for a colour one."""
    import json

    from glassformer.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD

    path = Path(folder) / PREPROCESSOR_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if "image_mean" not in data or "image_std" not in data:
            raise ValueError(f"{path} has no image_mean / image_std: add both (one value per channel)")
        return tuple(data["image_mean"]), tuple(data["image_std"])
    if in_channels == 1:
        return FASHION_MNIST_MEAN, FASHION_MNIST_STD
    return (HF_VIT_MEAN_STD[0],) * in_channels, (HF_VIT_MEAN_STD[1],) * in_channels


def image_files(sources: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files named, a folder standing for the image files directly in it (sorted by name)."""
    from glassformer.data.images import IMAGE_EXTENSIONS, ImageDataError

    if not sources:
        raise ValueError("no images given: name an image file or a folder of images")
    files: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found = sorted(
                p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise ImageDataError(
                    f"{source}: an empty folder: no image files in it "
                    f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
                )
            files += found
        elif source.is_file():
            files.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such image file or folder")
    return files


def _fit_size(image: Tensor, config: ViTConfig, name: str, notes: list[str]) -> Tensor:
    """An image at a size the model takes: kept when positions interpolate and it tiles, else resized."""
    from glassformer.data.images import resize

    h, w = image.shape[-2:]
    size = config.image_size
    tiles = h % config.patch_size == 0 and w % config.patch_size == 0
    if (h, w) == (size, size) or (config.interpolate_positions and tiles):
        return image
    notes.append(f"{name}: {w}x{h} pixels resized to the model's {size}x{size}")
    return resize(image, size)


@contextmanager
def warnings_as_notes(notes: list[str]) -> Iterator[None]:
    """Collect the warnings raised inside (e.g. "grayscale image copied to 3 channels") as notes."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    notes += [str(w.message) for w in caught]


def load_model_images(
    paths: Sequence[Path],
    config: ViTConfig,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[list[Tensor], list[str]]:
    """Each file as a normalised ``(1, C, H, W)`` batch for the model, and notes on what was converted.

    A grayscale file for a colour model is copied to its channels (and the reverse), with a note;
    a file that is not a readable image is an error naming it."""
    from glassformer.data.images import normalize, read_image

    mode = "L" if config.in_channels == 1 else "RGB"
    batches, notes = [], []
    for path in paths:
        with warnings_as_notes(notes):
            image = read_image(path, mode)  # (C, H, W) uint8; raises ImageDataError on a corrupt file
        image = _fit_size(image, config, path.name, notes)
        batches.append(normalize(image.float()[None] / 255.0, mean, std))  # (1, C, H, W)
    return batches, notes


def open_vit(checkpoint: str | os.PathLike[str]) -> nn.Module:
    """The ViT in a checkpoint folder, refusing any other family."""
    from glassformer.models import load_model

    return load_model(checkpoint, family="vit")


def classify_images(
    checkpoint: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]], *, k: int = 3
) -> tuple[list[tuple[Path, list[tuple[str, float]]]], list[str]]:
    """The ``k`` likeliest classes of each image file (or of each image in a folder), and the notes."""
    model = open_vit(checkpoint)
    if not model.config.num_labels:
        raise ValueError(
            f"{checkpoint}: this ViT has no classification head (num_labels=0); it cannot classify"
        )
    paths = image_files(sources)
    mean, std = image_stats(checkpoint, model.config.in_channels)
    batches, notes = load_model_images(paths, model.config, mean, std)
    model.eval()
    results = []
    with torch.no_grad():
        for path, batch in zip(paths, batches, strict=True):
            logits = model(batch).logits  # (1, num_labels)
            results.append((path, top_k_classes(logits, model.config.label_names, k)[0]))
    return results, notes


def attention_pictures(
    checkpoint: str | os.PathLike[str],
    image: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    layer: int = -1,
) -> tuple[list[Path], list[str]]:
    """Write the per-head overlay (``layer``) and the rollout overlay of one image; their paths and notes."""
    model = open_vit(checkpoint)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file (`glassformer attention` draws one image)")
    mean, std = image_stats(checkpoint, model.config.in_channels)
    (batch,), notes = load_model_images([path], model.config, mean, std)
    attentions, logits = vit_attentions(model, batch)
    n_prefix = _prefix_tokens(model)
    title = path.name
    if logits is not None:
        name, probability = top_k_classes(logits, model.config.label_names, 1)[0][0]
        title += f": {name} ({probability:.0%})"
    out = Path(out_dir)
    heads = plot_head_overlays(
        batch, attentions, out / f"{path.stem}_heads.png", layer=layer, n_prefix=n_prefix, title=title
    )
    rollout = plot_rollout_overlay(
        batch, attentions, out / f"{path.stem}_rollout.png", n_prefix=n_prefix, title=title
    )
    return [heads, rollout], notes


def fashion_test_grid(
    checkpoint: str | os.PathLike[str], path: str | os.PathLike[str], *, per_class: int = 3
) -> Path:
    """The per-class rollout grid (:func:`plot_class_grid`) of a Fashion-MNIST checkpoint on the test set."""
    from glassformer.data.images import load_fashion_mnist, normalize

    model = open_vit(checkpoint)
    images, labels = load_fashion_mnist("test")  # a clear error naming `make fashion-mnist` when absent
    chosen = pick_per_class(labels, per_class)
    c = model.config.in_channels
    batch = [
        _fit_size(images[i][None].expand(c, -1, -1), model.config, f"test image {i}", []) for i in chosen
    ]
    pixels = normalize(torch.stack(batch).float() / 255.0, *image_stats(checkpoint, c))  # (N, C, H, W)
    return plot_class_grid(
        model, pixels, labels[chosen], path, class_names=model.config.label_names, per_class=per_class
    )
