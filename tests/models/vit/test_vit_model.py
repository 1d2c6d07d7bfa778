"""The ViT model on its own: patches, pooling, attention paths, losses, input checks, config checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import glassformer.nn.attention as attention_module
from glassformer import registry
from glassformer.models import load_model
from glassformer.models.vit import ViT, ViTConfig, classification_loss, patchify
from glassformer.models.vit.model import DropPath
from glassformer.utils.config import ConfigError


def _config(**fields) -> ViTConfig:
    base = dict(image_size=16, patch_size=4, in_channels=3, num_labels=5, dim=32, n_layers=2, n_heads=4, ffn_dim=48)
    return ViTConfig(**{**base, **fields})


def _model(**fields) -> ViT:
    torch.manual_seed(0)
    return ViT(_config(**fields)).eval()


def _pixels(b: int = 2, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(3))


def test_patchify_then_linear_is_the_patch_convolution() -> None:
    model = _model()
    x = _pixels()
    conv = model.patch_embed
    by_hand = patchify(x, 4) @ conv.weight.flatten(1).T + conv.bias  # (B, N, C)
    torch.testing.assert_close(by_hand, conv(x).flatten(2).transpose(1, 2), atol=1e-6, rtol=0)
    # patch 1 (row 0, column 1) is pixels [0:4, 4:8], channel-major
    torch.testing.assert_close(patchify(x, 4)[:, 1], x[:, :, 0:4, 4:8].flatten(1))


def test_presets_have_their_shapes() -> None:
    fashion = registry.get("vit-fashion").make_config()
    assert (fashion.image_size, fashion.patch_size, fashion.in_channels, fashion.num_labels) == (28, 7, 1, 10)
    assert fashion.seq_len == 17 and len(fashion.label_names) == 10
    with torch.device("meta"):  # shapes only: no 86M weights to initialise
        base = ViT(registry.get("vit-b16").make_config())
    assert base.num_parameters() == 86_567_656  # google/vit-base-patch16-224 (ViTForImageClassification)
    assert registry.get("vit-ti16-tiny").make_config().patch_size == 8


def test_cls_and_mean_pooling_sequences() -> None:
    cls = _model()
    mean = _model(pooling="mean")
    assert cls.positions.shape == (1, 17, 32) and mean.positions.shape == (1, 16, 32) and mean.cls_token is None
    x = _pixels()
    with torch.no_grad():
        hidden = mean(x).hidden_states  # (B, 16, C), no [CLS]
        torch.testing.assert_close(mean(x).logits, mean.head(hidden.mean(1)))
        torch.testing.assert_close(cls(x).logits, cls.head(cls(x).hidden_states[:, 0]))


def test_eager_weights_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training runs the fused SDPA path; output_attentions switches to eager and returns the weights."""
    model = _model()
    x = _pixels()
    with torch.no_grad():
        eager = model(x, output_attentions=True)
    assert [a.shape for a in eager.attentions] == [(2, 4, 17, 17)] * 2
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(2, 4, 17))

    def refuse(*args, **kwargs):
        raise AssertionError("the eager attention path ran")

    monkeypatch.setattr(attention_module, "eager_attention", refuse)
    model.train()
    out = model(x, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert out.attentions is None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, eager.logits, atol=1e-5, rtol=0)


def test_hidden_states_are_each_layer_when_asked() -> None:
    model = _model()
    with torch.no_grad():
        out = model(_pixels(), output_hidden_states=True)
        assert len(out.hidden_states) == 3
        torch.testing.assert_close(model.norm(out.hidden_states[-1]), model(_pixels()).hidden_states)


def test_soft_targets_and_label_smoothing_match_torch() -> None:
    model = _model(label_smoothing=0.1)
    x, labels = _pixels(), torch.tensor([3, 1])
    out = model(x, labels=labels)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels, label_smoothing=0.1))
    soft = F.one_hot(labels, 5).float()
    torch.testing.assert_close(model(x, labels=soft).loss, out.loss)
    mixed = 0.7 * soft + 0.3 * F.one_hot(labels.flip(0), 5).float()  # mixup of the two images' labels
    expected = -(mixed * 0.9 + 0.1 / 5) * F.log_softmax(out.logits, -1)
    torch.testing.assert_close(model(x, labels=mixed).loss, expected.sum(-1).mean())
    with pytest.raises(ValueError, match=r"soft targets must be float probabilities of shape \(batch, num_labels\)"):
        classification_loss(out.logits, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_labels=5\)"):
        model(x, labels=torch.tensor([0, 5]))


def test_grayscale_to_a_colour_model_is_repeated_with_a_warning() -> None:
    model = _model()
    gray = _pixels(c=1)
    with pytest.warns(UserWarning, match="1-channel"):
        out = model(gray)
    torch.testing.assert_close(out.logits, model(gray.repeat(1, 3, 1, 1)).logits)


def test_bad_pixels_are_named() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\); got \(3, 16, 16\).*unsqueeze"):
        model(_pixels()[0])
    with pytest.raises(TypeError, match="got ndarray"):
        model(_pixels().numpy())
    with pytest.raises(TypeError, match="floating point.*255"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="2 channels but the model takes 3"):
        model(torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="20x20 but this model was built for 16x16"):
        model(_pixels(size=20))
    with pytest.raises(ValueError, match="not a whole number of 4x4 patches"):
        model(_pixels(size=18))


def test_interpolate_positions_from_config() -> None:
    model = _model(interpolate_positions=True)
    with torch.no_grad():
        assert model(_pixels(size=24)).hidden_states.shape == (2, 37, 32)
        same = model(_pixels())  # the trained size uses the table as it is
        torch.testing.assert_close(same.logits, _model()(_pixels()).logits)


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5).train()
    y = drop(torch.ones(400, 3, 2))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert 0.4 < (per_sample[:, 0] == 0).float().mean() < 0.6
    assert torch.equal(drop.eval()(torch.ones(4, 3)), torch.ones(4, 3))
    model = _model(drop_path=0.2)
    rates = [block.drop_path.p for block in model.blocks]
    assert rates[0] == 0.0 and math.isclose(rates[-1], 0.2)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(image_size=30), "image_size=30 is not divisible by patch_size=4"),
        (dict(dim=30), "dim=30 is not divisible by n_heads=4"),
        (dict(pooling="max"), "pooling='max'"),
        (dict(drop_path=1.0), "drop_path must be in"),
        (dict(label_names=("a",)), "1 names but num_labels=5"),
        (dict(pooler=True, pooling="mean"), "pooler=True reads the \\[CLS\\] token"),
    ],
)
def test_config_checks_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**fields)


def test_save_and_load_model_round_trip(tmp_path: Path) -> None:
    model = _model(pooling="mean", drop_path=0.1)
    model.save(tmp_path)
    back = load_model(tmp_path).eval()
    assert isinstance(back, ViT) and back.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(back(_pixels()).logits, model(_pixels()).logits)
