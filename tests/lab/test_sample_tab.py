"""The generate-images tab against ``sample`` (a tiny random class-conditional UNet), its caps and
its refusals, and how the lab recognises diffusion folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glassformer.lab import sample_tab
from glassformer.lab.catalog import TINY_DIFFUSION, folder_kind, trained_diffusion
from glassformer.lab.limits import LabInputError, Limits
from glassformer.models.diffusion.pictures import grid
from glassformer.models.diffusion.sampling import sample


@pytest.mark.parametrize("sampler,guidance", [("ddim", 0.0), ("ddim", 2.0), ("ddpm", 0.0)])
def test_the_tab_draws_what_sample_draws(ctx, sampler, guidance):
    out = sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandal", 3, sampler, 5, guidance, 7)
    model = ctx.catalog.get(TINY_DIFFUSION, "diffusion").model
    want = sample(model, 3, steps=5, sampler=sampler, guidance=guidance or None, labels="sandal", seed=7)
    expected = grid(want.images).resize(Image.open(out.grid).size, Image.NEAREST)
    np.testing.assert_array_equal(np.asarray(Image.open(out.grid).convert("L")), np.asarray(expected.convert("L")))
    assert Image.open(out.strip).size[0] > Image.open(out.strip).size[1]  # ten frames side by side
    assert f"{sampler.upper()} with 5 steps, seed 7" in out.summary


def test_the_same_seed_gives_the_same_images_and_another_seed_others(ctx):
    first = sample_tab.sample_images(ctx, TINY_DIFFUSION, sample_tab.UNCONDITIONAL, 2, "ddim", 4, 0, 3)
    again = sample_tab.sample_images(ctx, TINY_DIFFUSION, sample_tab.UNCONDITIONAL, 2, "ddim", 4, 0, 3)
    other = sample_tab.sample_images(ctx, TINY_DIFFUSION, sample_tab.UNCONDITIONAL, 2, "ddim", 4, 0, 4)
    pixels = [np.asarray(Image.open(o.grid)) for o in (first, again, other)]
    np.testing.assert_array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], pixels[2])


def test_the_class_list_and_bad_requests(ctx):
    assert sample_tab.class_choices(ctx, TINY_DIFFUSION)[:3] == [sample_tab.UNCONDITIONAL, "t-shirt", "trouser"]
    with pytest.raises(ValueError, match="unknown class 'sandle'.*did you mean 'sandal'"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandle", 1, "ddim", 2)
    with pytest.raises(LabInputError, match="guidance steers towards a class"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, sample_tab.UNCONDITIONAL, 1, "ddim", 2, 3.0)
    with pytest.raises(LabInputError, match=r"steps must be a whole number from 1 to 50, got 51 \(the model was trained with 50 noise levels\)"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandal", 1, "ddim", 51)
    with pytest.raises(LabInputError, match="the seed must be a whole number"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandal", 1, "ddim", 2, 0, 1.5)
    with pytest.raises(LabInputError, match="number of images must be a whole number from 1 to 16"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandal", 17)
    with pytest.raises(LabInputError, match="choose one of ddim, ddpm"):
        sample_tab.sample_images(ctx, TINY_DIFFUSION, "sandal", 1, "euler", 2)


def test_network_calls_are_capped_per_request(ctx):
    from glassformer.lab.app import new_context

    small = new_context(ctx.catalog, Limits(max_unet_calls=40), workdir=ctx.workdir)
    sample_tab.sample_images(small, TINY_DIFFUSION, "sandal", 4, "ddim", 10)  # 40 calls: allowed
    with pytest.raises(LabInputError, match=r"4 images x 10 steps x 2 \(guidance\) is 80 network calls; the lab allows 40"):
        sample_tab.sample_images(small, TINY_DIFFUSION, "sandal", 4, "ddim", 10, 1.0)


def test_diffusion_runs_under_out_are_found(ctx, tmp_path):
    import shutil

    run = tmp_path / "ddpm-fashion"
    shutil.copytree(ctx.workdir / "models" / TINY_DIFFUSION, run / "best")
    shutil.copytree(ctx.workdir / "models" / "tiny-bert", tmp_path / "bert-run" / "best")  # not diffusion
    assert trained_diffusion(tmp_path) == [run / "best"]
    assert folder_kind(run / "best") == "diffusion"
