"""Image augmentation: seeded and reproducible, correct on known tensors, soft labels that add up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glassformer.data.augment import (
    RANDAUGMENT_OPS,
    Compose,
    RandAugmentLite,
    RandomCrop,
    RandomHorizontalFlip,
    RandomMix,
    cutmix,
    mixup,
    soft_labels,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b: int = 16, c: int = 1, h: int = 12, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed))


TRANSFORMS = {
    "crop": RandomCrop(12, padding=2),
    "flip": RandomHorizontalFlip(0.5),
    "compose": Compose([RandomCrop(12, 2), RandomHorizontalFlip(), RandAugmentLite(2, 9)]),
    **{f"randaug-{name}": RandAugmentLite(1, 7, ops=[name]) for name in RANDAUGMENT_OPS},
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_transform_is_reproducible_and_random(name: str) -> None:
    t, x = TRANSFORMS[name], batch()
    before = torch.get_rng_state()
    first, again, other = t(x, gen(1)), t(x, gen(1)), t(x, gen(2))
    assert torch.equal(torch.get_rng_state(), before), "a transform drew from the global RNG"
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


@pytest.mark.parametrize("name", ["mixup", "cutmix", "randommix"])
def test_every_mixer_is_reproducible(name: str) -> None:
    x, y = batch(), torch.randint(0, 5, (16,), generator=gen(3))
    mixers = {
        "mixup": lambda g: mixup(x, y, n_classes=5, alpha=0.4, generator=g),
        "cutmix": lambda g: cutmix(x, y, n_classes=5, alpha=1.0, generator=g),
        "randommix": lambda g: RandomMix(5)(x, y, g),
    }
    (a, la), (b, lb), (c, _) = mixers[name](gen(1)), mixers[name](gen(1)), mixers[name](gen(7))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, c)
    assert la.shape == (16, 5) and la.dtype == torch.float32
    torch.testing.assert_close(la.sum(1), torch.ones(16))


def test_random_crop_cuts_a_window_of_the_zero_padded_image() -> None:
    x = torch.arange(1, 2 * 3 * 6 * 6 + 1, dtype=torch.float32).reshape(2, 3, 6, 6).repeat(16, 1, 1, 1)  # (32, 3, 6, 6)
    out = RandomCrop(4, padding=2)(x, gen(0))
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(x.shape[0]):
        hits = [(t, s) for t in range(7) for s in range(7) if torch.equal(out[i], padded[i, :, t : t + 4, s : s + 4])]
        assert len(hits) == 1, f"sample {i} is no window of its padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5  # each sample draws its own offset
    assert torch.equal(RandomCrop(6, padding=0)(x, gen(0)), x)


def test_random_crop_of_one_image_and_a_crop_too_large() -> None:
    image = batch(1)[0]
    assert RandomCrop(10, padding=1)(image, gen(0)).shape == (1, 10, 10)
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(20, padding=2)(image, gen(0))


def test_flip_mirrors_exactly_with_probability_p() -> None:
    x = batch(64)
    assert torch.equal(RandomHorizontalFlip(1.0)(x, gen(0)), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x, gen(0)), x)
    out = RandomHorizontalFlip(0.5)(x, gen(0))
    flipped = [torch.equal(o, f) for o, f in zip(out, x.flip(-1), strict=True)]
    kept = [torch.equal(o, k) for o, k in zip(out, x, strict=True)]
    assert all(a or b for a, b in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54


def test_randaugment_at_magnitude_zero_changes_nothing() -> None:
    x = batch(32)
    torch.testing.assert_close(RandAugmentLite(3, 0.0)(x, gen(0)), x, atol=1e-5, rtol=0)


def test_translate_at_full_magnitude_shifts_a_quarter_of_the_width() -> None:
    x = batch(32, h=28, w=28)
    out = RandAugmentLite(1, 10, ops=["translate_x"])(x, gen(0))
    right = torch.zeros_like(x)
    right[..., 7:] = x[..., :-7]
    left = torch.zeros_like(x)
    left[..., :-7] = x[..., 7:]
    for o, r, lft in zip(out, right, left, strict=True):
        assert torch.allclose(o, r, atol=1e-5) or torch.allclose(o, lft, atol=1e-5)


def test_erase_zeroes_a_rectangle_and_keeps_the_rest() -> None:
    x = batch(16) + 0.5  # no zeros to begin with
    out = RandAugmentLite(1, 10, ops=["erase"])(x.clamp(max=1.0), gen(0))
    changed = out != x.clamp(max=1.0)
    assert bool((out[changed] == 0).all()) and bool(changed.any())


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="float images"):
        RandomHorizontalFlip()(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), gen(0))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomCrop(4)(torch.zeros(4, 4), gen(0))
    with pytest.raises(ValueError, match="did you mean 'rotate'"):
        RandAugmentLite(ops=["rotat"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        mixup(batch(2), torch.tensor([0, 3]), n_classes=3, generator=gen(0))


def test_mixup_blends_images_and_labels_with_one_weight() -> None:
    # with labels 0..B-1 and B classes, the soft labels are exactly the mixing matrix of the images
    x = batch(8)
    mixed, soft = mixup(x, torch.arange(8), n_classes=8, alpha=0.4, generator=gen(5))
    torch.testing.assert_close(mixed.flatten(1), soft @ x.flatten(1))
    assert not torch.equal(mixed, x)


def test_cutmix_label_weights_equal_the_pasted_area() -> None:
    b = 8
    x = (torch.arange(b, dtype=torch.float32) / b + 0.05)[:, None, None, None].expand(b, 1, 16, 16).contiguous()
    mixed, soft = cutmix(x, torch.arange(b), n_classes=b, alpha=1.0, generator=gen(4))
    for i in range(b):
        values = mixed[i].flatten()
        shares = torch.stack([(values == x[j, 0, 0, 0]).float().mean() for j in range(b)])  # (b,)
        torch.testing.assert_close(shares, soft[i])


def test_mixers_accept_soft_labels_and_random_mix_can_pass_through() -> None:
    x, y = batch(6), torch.randint(0, 4, (6,), generator=gen(0))
    _, once = mixup(x, y, n_classes=4, generator=gen(0))
    _, twice = mixup(x, once, n_classes=4, generator=gen(1))
    torch.testing.assert_close(twice.sum(1), torch.ones(6))
    images, labels = RandomMix(4, prob=0.0)(x, y, gen(0))
    assert torch.equal(images, x) and torch.equal(labels, soft_labels(y, 4))


def test_our_affine_grid_equals_torch_affine_grid() -> None:
    from glassformer.data.augment import _affine

    theta = torch.randn(5, 2, 3, generator=gen(0))
    x = torch.rand(5, 2, 9, 7, generator=gen(1))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    ref = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(_affine(x, theta), ref, atol=1e-5, rtol=0)
