"""Every registered preset's -tiny twin builds, runs forward and backward, and returns a finite loss."""

from __future__ import annotations

import math

import pytest
import torch

from glassformer.registry import get, presets

TINY = [name for name in presets() if name.endswith("-tiny")]


def test_every_preset_has_a_tiny_twin() -> None:
    names = set(presets())
    missing = [n for n in names if not n.endswith("-tiny") and f"{n}-tiny" not in names]
    assert not missing, f"presets without a -tiny twin: {missing}"
    assert TINY, "no presets registered"


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    preset = get(name)
    config = preset.make_config()
    model = preset.build(config)
    model.train()
    out = model(**preset.example_batch(config))
    assert out.loss is not None and out.loss.dim() == 0
    assert math.isfinite(out.loss.item())
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), "no parameter received a gradient"
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known presets"):
        get("no-such-model")
