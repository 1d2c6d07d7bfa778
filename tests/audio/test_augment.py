"""SpecAugment: reproducible from a seed, and the masked cells are exactly the reported bands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glassformer.audio import AudioError, Mask, spec_augment


def _features(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _mask_of(masks: list[Mask], n_mels: int, frames: int) -> torch.Tensor:
    """The boolean cells the reported bands cover, built independently of spec_augment's loop."""
    covered = torch.zeros(n_mels, frames, dtype=torch.bool)
    rows = torch.arange(n_mels)[:, None]
    cols = torch.arange(frames)[None, :]
    for m in masks:
        if m.axis == "freq":
            covered |= ((rows >= m.start) & (rows < m.start + m.width)).expand(n_mels, frames)
        else:
            covered |= ((cols >= m.start) & (cols < m.start + m.width)).expand(n_mels, frames)
    return covered


def test_same_seed_same_result_and_input_untouched() -> None:
    x = _features((80, 300))
    before = x.clone()
    a = spec_augment(x, generator=7)
    b = spec_augment(x, generator=7)
    assert torch.equal(a.features, b.features) and a.masks == b.masks
    assert torch.equal(x, before)
    c = spec_augment(x, generator=8)
    assert c.masks != a.masks


def test_generator_advances_and_replays() -> None:
    x = _features((80, 300))
    gen = torch.Generator().manual_seed(3)
    first, second = spec_augment(x, generator=gen), spec_augment(x, generator=gen)
    assert first.masks != second.masks
    gen.manual_seed(3)
    assert spec_augment(x, generator=gen).masks == first.masks


def test_masked_cells_are_exactly_the_reported_bands() -> None:
    x = _features((3, 80, 400), seed=1)
    result = spec_augment(x, n_freq_masks=3, freq_width=20, n_time_masks=4, time_width=60, generator=11)
    assert len(result.masks) == 3
    for clip, out, masks in zip(x, result.features, result.masks):
        assert [m.axis for m in masks] == ["freq"] * 3 + ["time"] * 4
        assert all(0 <= m.width <= (20 if m.axis == "freq" else 60) for m in masks)
        covered = _mask_of(masks, 80, 400)
        assert covered.any()
        fill = clip.mean()
        assert torch.allclose(out[covered], fill.expand(int(covered.sum())))
        assert torch.equal(out[~covered], clip[~covered])


def test_numpy_in_numpy_out_with_a_fixed_value() -> None:
    x = _features((80, 100), seed=2).numpy()
    result = spec_augment(x, generator=5, time_width=30, mask_value=-1.5)
    assert isinstance(result.features, np.ndarray)
    covered = _mask_of(result.masks[0], 80, 100).numpy()
    assert (result.features[covered] == -1.5).all()
    np.testing.assert_array_equal(result.features[~covered], x[~covered])


def test_time_masks_stay_inside_each_clips_length() -> None:
    x = _features((4, 80, 200), seed=4)
    lengths = torch.tensor([200, 50, 17, 120])
    for seed in range(20):
        result = spec_augment(x, n_time_masks=3, time_width=100, generator=seed, lengths=lengths)
        for masks, length in zip(result.masks, lengths.tolist()):
            assert all(m.start + m.width <= length for m in masks if m.axis == "time")


def test_zero_masks_change_nothing() -> None:
    x = _features((80, 50))
    result = spec_augment(x, n_freq_masks=0, n_time_masks=0)
    assert torch.equal(result.features, x) and result.masks == [[]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"freq_width": 81}, "freq_width=81 is more than the 80 mel bins"),
        ({"n_time_masks": -1}, "n_time_masks must be a whole number >= 0"),
        ({"time_width": 2.5}, "time_width must be a whole number"),
        ({"generator": "seed"}, "torch.Generator or an int seed"),
        ({"lengths": torch.tensor([10, 20])}, r"lengths must hold 1 frame counts in 1\.\.50"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        spec_augment(_features((80, 50)), **kwargs)


def test_bad_shape() -> None:
    with pytest.raises(AudioError, match=r"\(n_mels, frames\) or \(B, n_mels, frames\)"):
        spec_augment(torch.zeros(80))
