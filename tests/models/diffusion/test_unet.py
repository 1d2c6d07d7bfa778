"""Our UNet against diffusers' UNet2DModel on small random weights, both directions, and its loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from glassformer.models.diffusion import DiffusionConfig, DiffusionUNet
from glassformer.models.diffusion.diffusers_io import (
    config_to_diffusers,
    from_diffusers,
    save_diffusers,
    state_to_diffusers,
    unpatched,
)
from glassformer.models.diffusion.unet import timestep_embedding

diffusers = pytest.importorskip("diffusers")

ATOL = 1e-5
CONDITIONAL = dict(
    sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=8, norm_num_groups=4, num_class_embeds=5,
)  # fmt: skip
# unconditional, RGB, one ResBlock per level, attention on the top level only, no mid attention,
# [sin, cos] halves with DDPM's original frequency shift and a wider time embedding
PLAIN = dict(
    sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 8), layers_per_block=1,
    down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
    attention_head_dim=4, norm_num_groups=4, add_attention=False, flip_sin_to_cos=False, freq_shift=1,
    time_embedding_dim=40, norm_eps=1e-6,
)  # fmt: skip


def _random_diffusers(fields: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = diffusers.UNet2DModel(**fields).eval()
    with torch.no_grad():
        for p in model.parameters():  # noise everywhere: a zero bias or unit norm cannot hide a swap
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _inputs(fields: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(1)
    size, channels = fields["sample_size"], fields["in_channels"]
    x = torch.randn(3, channels, size, size, generator=gen)
    labels = torch.tensor([0, 3, 4]) if fields.get("num_class_embeds") else None
    return x, torch.tensor([0, 17, 999]), labels


@pytest.mark.parametrize("fields", [CONDITIONAL, PLAIN], ids=["conditional", "plain"])
def test_diffusers_unet_loads_with_equal_outputs_and_exports_back(fields: dict, tmp_path: Path) -> None:
    theirs = _random_diffusers(fields)
    theirs.save_pretrained(tmp_path / "theirs")
    ours = from_diffusers(tmp_path / "theirs").eval()
    x, t, labels = _inputs(fields)
    with torch.no_grad():
        expected = theirs(x, t, class_labels=labels).sample
        torch.testing.assert_close(ours.denoise(x, t, labels), expected, atol=ATOL, rtol=0)
    save_diffusers(ours, tmp_path / "ours")
    back, info = diffusers.UNet2DModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or re-initialised
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x, t, class_labels=labels).sample, expected, atol=ATOL, rtol=0)


def test_schedule_travels_with_the_export(tmp_path: Path) -> None:
    config = DiffusionConfig(image_size=8, channels=(8, 8), attention=(False, True), head_dim=8, norm_groups=4,
                             n_classes=3, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                             num_train_timesteps=200)  # fmt: skip
    save_diffusers(DiffusionUNet(config), tmp_path)
    scheduler = diffusers.DDIMScheduler.from_pretrained(tmp_path)
    assert (scheduler.config.beta_schedule, scheduler.config.prediction_type) == ("squaredcos_cap_v2", "v_prediction")
    assert from_diffusers(tmp_path).config == config


@pytest.mark.parametrize("flip,shift", [(True, 0), (False, 1)])
def test_time_embedding_matches_diffusers(flip: bool, shift: int) -> None:
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 250, 999])
    expected = get_timestep_embedding(t, 32, flip_sin_to_cos=flip, downscale_freq_shift=shift)
    torch.testing.assert_close(timestep_embedding(t, 32, flip_sin_to_cos=flip, freq_shift=shift), expected)


@pytest.mark.parametrize("field,value,needle", [
    ("down_block_types", ("CrossAttnDownBlock2D", "DownBlock2D"), "CrossAttnDownBlock2D"),
    ("up_block_types", ("AttnUpBlock2D", "UpBlock2D"), "must mirror"),
    ("resnet_time_scale_shift", "scale_shift", "resnet_time_scale_shift"),
])  # fmt: skip
def test_untranslatable_diffusers_configs_say_which_field(field: str, value: object, needle: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    data = {**PLAIN, "_class_name": "UNet2DModel", field: value}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=needle):
        from_diffusers(tmp_path)


def test_the_loss_is_the_noise_prediction_error_of_diffusers_unet(tmp_path: Path) -> None:
    """forward = MSE(UNet(add_noise(x0, eps, t), t, y), eps), the noising done by diffusers' scheduler."""
    theirs = _random_diffusers(CONDITIONAL)
    theirs.save_pretrained(tmp_path)
    ours = from_diffusers(tmp_path).eval()
    x0, t, labels = _inputs(CONDITIONAL)
    noise = torch.randn_like(x0)
    noisy = diffusers.DDPMScheduler().add_noise(x0, noise, t)
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(theirs(noisy, t, class_labels=labels).sample, noise)
        got = ours(x0, labels, timesteps=t, noise=noise).loss
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_class_dropout_only_in_training_and_draws_are_seeded() -> None:
    config = DiffusionConfig(image_size=8, channels=(8, 8), attention=(False, False), head_dim=8, norm_groups=4,
                             n_classes=3, class_dropout=0.5, mid_attention=False)  # fmt: skip
    model = DiffusionUNet(config)
    x0 = torch.rand(64, 1, 8, 8) * 2 - 1
    labels = torch.zeros(64, dtype=torch.long)
    seen: list[torch.Tensor] = []
    model.class_emb.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    model.train()
    first = model(x0, labels, generator=torch.Generator().manual_seed(3)).loss
    again = model(x0, labels, generator=torch.Generator().manual_seed(3)).loss
    assert torch.equal(first, again)
    dropped = (seen[0] == config.null_class).float().mean()
    assert 0.25 < dropped < 0.75, dropped
    assert not torch.equal(model(x0, labels).loss, model(x0, labels).loss)  # fresh draws while training
    model.eval()
    evaluated = model(x0, labels).loss
    assert not (seen[-1] == config.null_class).any()
    assert torch.equal(model(x0, labels).loss, evaluated)  # evaluations compare like with like


def test_bad_inputs_name_the_problem() -> None:
    model = DiffusionUNet(DiffusionConfig(image_size=8, channels=(8, 8), attention=(False, False), head_dim=8,
                                          norm_groups=4, n_classes=3))  # fmt: skip
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\)"):
        model(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="multiples of 2 \\(pad the images"):
        model(torch.rand(2, 1, 7, 7))
    with pytest.raises(TypeError, match="floating point"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        model(torch.rand(2, 1, 8, 8), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="attention has 1 entries but channels has 2"):
        DiffusionConfig(channels=(8, 8), attention=(True,))


def test_the_patched_stem_is_diffusers_unet_on_folded_pixels() -> None:
    """patch_size=2 folds 2x2 pixels into channels: the network inside is a plain UNet2DModel."""
    config = DiffusionConfig(image_size=16, patch_size=2, channels=(8, 16), attention=(False, True), head_dim=8,
                             norm_groups=4, n_classes=3)  # fmt: skip
    torch.manual_seed(0)
    ours = DiffusionUNet(config).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    fields = {k: v for k, v in config_to_diffusers(unpatched(config)).items() if not k.startswith("_")}
    theirs = diffusers.UNet2DModel(**fields).eval()
    theirs.load_state_dict(state_to_diffusers(ours))
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t, labels = torch.tensor([0, 17, 999]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        inner = theirs(torch.nn.functional.pixel_unshuffle(x, 2), t, class_labels=labels).sample  # (3, 4, 8, 8)
        torch.testing.assert_close(ours.denoise(x, t, labels), torch.nn.functional.pixel_shuffle(inner, 2),
                                   atol=ATOL, rtol=0)  # fmt: skip
    with pytest.raises(ValueError, match="no space-to-depth stem"):
        config_to_diffusers(config)
    with pytest.raises(ValueError, match="multiples of 4"):
        ours(torch.rand(2, 1, 18, 18))
