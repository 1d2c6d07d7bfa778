"""SpecAugment-style masking (Park et al. 2019) of log-mel features, seeded so a run can be replayed.

Each frequency mask blanks ``f`` consecutive mel bins, ``f`` drawn uniformly from ``0..freq_width``
and its start uniformly among the places it fits; time masks do the same along frames. Masks may
overlap. The masked value defaults to the clip's mean feature: in Whisper's ``(log10 + 4) / 4``
scale zero is not silence, and the mean leaves the input's statistics where training expects them.
Time warping, the paper's third step, is left out: the paper found it the least influential of the three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from glassformer.audio.io import AudioError


@dataclass(frozen=True)
class Mask:
    """One masked band: ``width`` rows (``axis="freq"``) or columns (``axis="time"``) from ``start``."""

    axis: str
    start: int
    width: int

    def slice(self) -> slice:
        return slice(self.start, self.start + self.width)


@dataclass(frozen=True)
class SpecAugmentResult:
    """The masked copy of the features and, per clip, the masks applied, in the order drawn."""

    features: np.ndarray | torch.Tensor
    masks: list[list[Mask]]


def spec_augment(
    features: np.ndarray | torch.Tensor,
    n_freq_masks: int = 2,
    freq_width: int = 27,
    n_time_masks: int = 2,
    time_width: int = 100,
    generator: torch.Generator | int = 0,
    mask_value: float | None = None,
    lengths: torch.Tensor | np.ndarray | None = None,
) -> SpecAugmentResult:
    """Masks drawn and applied to ``(n_mels, frames)`` or ``(B, n_mels, frames)`` features; input untouched.

    ``generator`` is a ``torch.Generator`` (its state advances, as a training loop wants) or an
    int seed (the same seed gives the same masks). ``lengths`` keeps time masks inside each clip's
    real frames, off the padding of a :class:`~glassformer.audio.features.MelBatch`. Defaults are
    LibriSpeech's "LD" policy (F=27, T=100, two of each).
    """
    for name, value in (
        ("n_freq_masks", n_freq_masks),
        ("freq_width", freq_width),
        ("n_time_masks", n_time_masks),
        ("time_width", time_width),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AudioError(f"spec_augment: {name} must be a whole number >= 0, got {value!r}")
    batched = features.ndim == 3
    if features.ndim not in (2, 3):
        raise AudioError(
            f"spec_augment takes (n_mels, frames) or (B, n_mels, frames), got shape {tuple(features.shape)}"
        )
    out = features.clone() if isinstance(features, torch.Tensor) else features.copy()
    clips = out if batched else out[None]
    n_mels, frames = clips.shape[1], clips.shape[2]
    clip_lengths = _clip_lengths(lengths, clips.shape[0], frames)
    if freq_width > n_mels:
        raise AudioError(f"spec_augment: freq_width={freq_width} is more than the {n_mels} mel bins")
    rng = _generator(generator)
    all_masks = []
    for clip, length in zip(clips, clip_lengths):
        fill = float(clip[:, :length].mean()) if mask_value is None else mask_value
        masks = [_draw("freq", freq_width, n_mels, rng) for _ in range(n_freq_masks)]
        masks += [_draw("time", min(time_width, length), length, rng) for _ in range(n_time_masks)]
        for mask in masks:
            if mask.axis == "freq":
                clip[mask.slice(), :] = fill
            else:
                clip[:, mask.slice()] = fill
        all_masks.append(masks)
    return SpecAugmentResult(out, all_masks)


def _draw(axis: str, max_width: int, size: int, rng: torch.Generator) -> Mask:
    width = int(torch.randint(0, max_width + 1, (), generator=rng))
    start = int(torch.randint(0, size - width + 1, (), generator=rng))
    return Mask(axis, start, width)


def _generator(generator: torch.Generator | int) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise AudioError(
            f"spec_augment: generator must be a torch.Generator or an int seed, got {generator!r}"
        )
    return torch.Generator().manual_seed(generator)


def _clip_lengths(lengths: torch.Tensor | np.ndarray | None, batch: int, frames: int) -> list[int]:
    if lengths is None:
        return [frames] * batch
    values = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if len(values) != batch or any(not (0 < n <= frames) for n in values):
        raise AudioError(f"spec_augment: lengths must hold {batch} frame counts in 1..{frames}, got {values}")
    return values
