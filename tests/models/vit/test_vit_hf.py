"""ViT against Hugging Face ``transformers`` on small random weights, both ways (fp32, 1e-5).

Each direction compares logits, every hidden state and every attention map; the position
interpolation for another image size is compared as a table and through a whole forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from glassformer.models import load_model
from glassformer.models.vit import ViT, ViTConfig, interpolate_positions
from glassformer.models.vit.hf import architecture, from_pretrained, save_pretrained

transformers = pytest.importorskip("transformers")

ATOL = 1e-5


def _randomize(model: torch.nn.Module) -> None:
    """Noise on every parameter, so a zero bias or a unit norm weight cannot hide a misplaced tensor."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)


def _hf_config(**fields: Any) -> Any:
    base = dict(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, layer_norm_eps=1e-6, hidden_act="gelu", num_labels=5,
    )  # fmt: skip
    return transformers.ViTConfig(**{**base, **fields})


def _hf_model(cls: str = "ViTForImageClassification", **fields: Any) -> Any:
    torch.manual_seed(0)
    model = getattr(transformers, cls)(_hf_config(attn_implementation="eager", **fields)).eval()
    _randomize(model)
    return model


def _pixels(size: int = 16, width: int | None = None, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, width or size, generator=torch.Generator().manual_seed(2))


def _assert_same(ours: Any, theirs: Any) -> None:
    """Logits (when a head), every hidden state and every attention map agree."""
    if ours.logits is not None:
        torch.testing.assert_close(ours.logits, theirs.logits, atol=ATOL, rtol=0)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert len(ours.attentions) == len(theirs.attentions)
    for a, b in zip(ours.attentions, theirs.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def _run(model: Any, x: torch.Tensor, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model(x, output_attentions=True, output_hidden_states=True, **kwargs)


@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_ours_loads_a_transformers_classifier(act: str, tmp_path: Path) -> None:
    hf = _hf_model(hidden_act=act)
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    assert ours.config.num_labels == 5 and ours.config.in_channels == 3
    x = _pixels()
    _assert_same(_run(ours, x), _run(hf, x))
    # the fused path (what training uses) gives the same logits as the eager one
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, hf(x).logits, atol=ATOL, rtol=0)


def test_transformers_loads_our_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = ViT(ViTConfig(image_size=16, patch_size=4, num_labels=3, dim=32, n_layers=2, n_heads=2, ffn_dim=40,
                         norm_eps=1e-6, label_names=("a", "b", "c"))).eval()  # fmt: skip
    _randomize(ours)
    save_pretrained(ours, tmp_path)
    hf, info = transformers.ViTForImageClassification.from_pretrained(
        tmp_path, attn_implementation="eager", output_loading_info=True
    )
    assert not any(info.values()), info  # nothing missing, unexpected or mis-shaped
    assert hf.config.id2label == {0: "a", 1: "b", 2: "c"}
    x = _pixels()
    _assert_same(_run(ours, x), _run(hf.eval(), x))
    back = load_model(tmp_path)
    assert isinstance(back, ViT) and back.config.label_names == ("a", "b", "c")


def test_vit_model_with_pooler_both_ways(tmp_path: Path) -> None:
    hf = _hf_model("ViTModel")
    hf.save_pretrained(tmp_path / "hf")
    ours = from_pretrained(tmp_path / "hf").eval()
    assert ours.config.num_labels == 0 and ours.config.pooler and architecture(ours.config) == "ViTModel"
    x = _pixels()
    theirs = _run(hf, x)
    mine = _run(ours, x)
    _assert_same(mine, theirs)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x).hidden, theirs.last_hidden_state, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.pooled_output(ours.encode(x).hidden), theirs.pooler_output, atol=ATOL, rtol=0)
    save_pretrained(ours, tmp_path / "ours")
    again, info = transformers.ViTModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x).pooler_output, theirs.pooler_output, atol=ATOL, rtol=0)


def test_a_new_head_on_a_pretrained_encoder_warns(tmp_path: Path) -> None:
    _hf_model().save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="new head"):
        ours = from_pretrained(tmp_path, num_labels=10)
    assert ours.head.out_features == 10


@pytest.mark.parametrize("size", [(24, 24), (20, 28), (8, 8)])
def test_position_interpolation_matches_transformers(size: tuple[int, int], tmp_path: Path) -> None:
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    ours = from_pretrained(tmp_path).eval()
    h, w = size
    x = _pixels(h, w)
    tokens = torch.zeros(1, 1 + (h // 4) * (w // 4), 32)
    with torch.no_grad():
        table = hf.vit.embeddings.interpolate_pos_encoding(tokens, h, w)
        torch.testing.assert_close(interpolate_positions(ours.positions, 1, h // 4, w // 4), table, atol=ATOL, rtol=0)
        _assert_same(_run(ours, x, interpolate_pos_encoding=True), _run(hf, x, interpolate_pos_encoding=True))
    with pytest.raises(ValueError, match=rf"{h}x{w} but this model was built for 16x16"):
        ours(x)


def test_exports_without_an_equivalent_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Hugging Face equivalent"):
        save_pretrained(ViT(ViTConfig(image_size=16, patch_size=4, dim=32, n_layers=1, n_heads=4, ffn_dim=32,
                                      pooling="mean")), tmp_path / "out")  # fmt: skip
    assert not (tmp_path / "out").exists()
    _hf_model(qkv_bias=False).save_pretrained(tmp_path / "nobias")
    with pytest.raises(ValueError, match="qkv_bias=False"):
        from_pretrained(tmp_path / "nobias")
