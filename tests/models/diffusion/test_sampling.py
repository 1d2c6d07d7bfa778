"""sample(): equal to a diffusers loop on the same weights, seeded, guided, EMA-aware; the verb; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from glassformer import registry
from glassformer.cli import main
from glassformer.models.diffusion import DiffusionUNet, load_for_sampling, sample
from glassformer.models.diffusion.diffusers_io import save_diffusers

diffusers = pytest.importorskip("diffusers")

LABELS = [5, 0, 9]


@pytest.fixture(scope="module")
def model() -> DiffusionUNet:
    torch.manual_seed(0)
    # 16x16, 50 training steps, 10 named classes; the plain stem, which diffusers folders can hold
    unet = registry.build("ddpm-fashion-tiny", patch_size=1).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return unet


def _their_loop(folder: Path, kind: str, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """Sampling written against diffusers' own UNet and scheduler, guidance by hand, one CPU generator."""
    unet = diffusers.UNet2DModel.from_pretrained(folder).eval()
    cls = diffusers.DDIMScheduler if kind == "ddim" else diffusers.DDPMScheduler
    scheduler = cls.from_pretrained(folder)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(LABELS), 1, 16, 16, generator=generator)
    y, null = torch.tensor(LABELS), torch.full((len(LABELS),), 10)
    with torch.no_grad():
        for t in scheduler.timesteps:
            cond = unet(x, t, class_labels=y).sample
            uncond = unet(x, t, class_labels=null).sample
            out = cond + guidance * (cond - uncond)
            extra = {"use_clipped_model_output": True} if kind == "ddim" else {}  # sample()'s default
            x = scheduler.step(out, t, x, generator=generator, **extra).prev_sample
    return x.clamp(-1, 1)


@pytest.mark.parametrize("kind,steps", [("ddim", 7), ("ddpm", 10)])
def test_sampling_equals_a_diffusers_loop_on_the_same_weights(model: DiffusionUNet, kind: str, steps: int,
                                                              tmp_path: Path) -> None:  # fmt: skip
    save_diffusers(model, tmp_path)
    expected = _their_loop(tmp_path, kind, steps, guidance=2.0, seed=4)
    got = sample(model, 3, steps=steps, sampler=kind, guidance=2.0, labels=LABELS, seed=4)
    torch.testing.assert_close(got.images, expected, atol=1e-4, rtol=0)


def test_same_seed_same_images(model: DiffusionUNet) -> None:
    first = sample(model, 2, steps=4, sampler="ddim", eta=1.0, labels="sandal", seed=11)
    again = sample(model, 2, steps=4, sampler="ddim", eta=1.0, labels="sandal", seed=11)
    other = sample(model, 2, steps=4, sampler="ddim", eta=1.0, labels="sandal", seed=12)
    assert torch.equal(first.images, again.images)
    assert not torch.allclose(first.images, other.images)
    assert first.labels.tolist() == [5, 5]


def test_guidance_moves_the_samples_along_cond_minus_uncond(model: DiffusionUNet) -> None:
    """One DDIM step without clipping: the guided output is cond + w (cond - uncond), so x_prev is linear in w."""
    unclipped = DiffusionUNet(model.config.replace(clip_sample=False)).eval()
    unclipped.load_state_dict(model.state_dict())
    request = dict(steps=1, sampler="ddim", labels=LABELS, seed=0, return_trajectory=True)
    at = {w: sample(unclipped, 3, guidance=w, **request).trajectory[-1] for w in (0.0, 1.0, 2.0)}
    plain = sample(unclipped, 3, **request).trajectory[-1]
    assert torch.equal(at[0.0], plain)
    assert not torch.allclose(at[1.0], plain)
    torch.testing.assert_close(at[2.0] - at[1.0], at[1.0] - at[0.0], atol=1e-4, rtol=1e-5)


def test_the_trajectory_holds_every_step(model: DiffusionUNet) -> None:
    result = sample(model, 2, steps=5, labels=[1, 2], seed=0, return_trajectory=True)
    assert result.trajectory.shape == (6, 2, 1, 16, 16) and result.predictions.shape == (5, 2, 1, 16, 16)
    assert torch.equal(result.trajectory[-1].clamp(-1, 1), result.images)
    assert result.timesteps == [40, 30, 20, 10, 0]


def test_bad_requests_say_what_to_do(model: DiffusionUNet) -> None:
    with pytest.raises(ValueError, match=r"unknown class 'sandle' \(did you mean 'sandal'\?\).*t-shirt, trouser"):
        sample(model, 1, steps=2, labels="sandle")
    with pytest.raises(TypeError, match=r"seed must be an integer, got 1.5 \(float\)"):
        sample(model, 1, steps=2, seed=1.5)
    with pytest.raises(ValueError, match="steps=51 is more than the 50 timesteps"):
        sample(model, 1, steps=51)
    with pytest.raises(ValueError, match="guidance steers towards a class: pass labels="):
        sample(model, 1, steps=2, guidance=3.0)
    with pytest.raises(ValueError, match="eta belongs to DDIM"):
        sample(model, 1, sampler="ddpm", eta=0.5)
    unconditional = DiffusionUNet(model.config.replace(n_classes=0, class_names=()))
    with pytest.raises(ValueError, match="guidance needs a class-conditional model.*unconditional"):
        sample(unconditional, 1, steps=2, guidance=3.0)


def test_ema_weights_are_used_when_the_checkpoint_has_them(model: DiffusionUNet, tmp_path: Path) -> None:
    model.save(tmp_path)
    averaged = {k: v + 1.0 for k, v in model.state_dict().items()}  # what the engine's EMA would hold
    save_file({k: v.contiguous() for k, v in averaged.items()}, str(tmp_path / "ema.safetensors"))
    with_ema, raw = load_for_sampling(tmp_path), load_for_sampling(tmp_path, ema=False)
    for key, tensor in model.state_dict().items():
        assert torch.equal(with_ema.state_dict()[key], averaged[key]), key
        assert torch.equal(raw.state_dict()[key], tensor), key


def test_the_sample_verb_writes_a_grid(model: DiffusionUNet, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model.save(tmp_path / "ckpt")
    png = tmp_path / "grid.png"
    argv = ["sample", str(tmp_path / "ckpt"), "--class", "sandal", "--n", "4", "--steps", "3", "--guidance", "3",
            "--seed", "0", "--scale", "2", "--out", str(png)]  # fmt: skip
    assert main([*argv, "--strip", str(tmp_path / "strip.png"), "--gif", str(tmp_path / "steps.gif")]) == 0
    assert Image.open(tmp_path / "strip.png").size == (2 * (3 * 18 + 2), 2 * (2 * 18 + 2))  # 3 steps, 2 rows
    assert Image.open(tmp_path / "steps.gif").n_frames == 4
    assert Image.open(png).size == (2 * (2 * 18 + 2), 2 * (2 * 18 + 2))  # 2x2 tiles of 16 px, 2 px apart
    assert main([*argv[:3], "hat", *argv[4:]]) == 2
    assert "unknown class 'hat'; the classes are: t-shirt" in capsys.readouterr().err


def test_strip_and_gif_show_the_denoising(model: DiffusionUNet, tmp_path: Path) -> None:
    from glassformer.models.diffusion.pictures import save_gif, save_strip, strip

    result = sample(model, 2, steps=12, labels=[3, 4], seed=0, return_trajectory=True)
    picture = strip(result, index=1, frames=10)
    assert picture.size == (10 * 18 + 2, 2 * 18 + 2)  # 10 snapshots over their x_0 guesses
    first = torch.tensor(list(picture.crop((2, 2, 18, 18)).getdata()), dtype=torch.float32).view(16, 16)
    expected = ((result.trajectory[0, 1, 0].clamp(-1, 1) + 1) * 127.5).round()
    assert torch.equal(first, expected)  # the first tile is x_T of image 1
    save_strip(result, tmp_path / "strip.png", index=1)
    gif = Image.open(save_gif(result, tmp_path / "steps.gif"))
    assert gif.n_frames == 13
    with pytest.raises(ValueError, match="return_trajectory=True"):
        strip(sample(model, 1, steps=2, seed=0))
