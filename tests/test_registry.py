"""Every registered preset's -tiny twin builds, runs forward and backward, and returns a finite loss.

The families come from their ``Family`` records alone: a throwaway family declared in a temporary
module shows up in the presets, in ``load_model`` and in this file's tiny-twin test.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from glassformer import registry
from glassformer.models import load_model
from glassformer.registry import get, presets

TINY = [name for name in presets() if name.endswith("-tiny")]


def test_every_preset_has_a_tiny_twin() -> None:
    names = set(presets())
    missing = [n for n in names if not n.endswith("-tiny") and f"{n}-tiny" not in names]
    assert not missing, f"presets without a -tiny twin: {missing}"
    assert TINY, "no presets registered"


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward(name: str) -> None:
    check_tiny_twin(name)


def check_tiny_twin(name: str) -> None:
    """The preset's model builds, gives a finite scalar loss, and every gradient is finite."""
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


# A family in one module: a config, a model returning its loss, presets and a tiny twin.
THROWAWAY = textwrap.dedent("""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from glassformer.models.base import ModelBase, ModelOutput
    from glassformer.registry import Family
    from glassformer.utils.config import ConfigMixin


    @dataclass
    class ToyConfig(ConfigMixin):
        dim: int = 64


    class Toy(ModelBase):
        family = "toy"
        config_class = ToyConfig

        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.dim, 1)

        def forward(self, x, y):
            loss = ((self.proj(x).squeeze(-1) - y) ** 2).mean()
            return ModelOutput(loss=loss)


    def example_batch(config):
        return {"x": torch.randn(4, config.dim), "y": torch.randn(4)}


    FAMILY = Family(
        name="toy", model=Toy, config=ToyConfig, presets={"toy-base": (ToyConfig, "a throwaway family")},
        tiny=lambda c: c.replace(dim=3), example_batch=example_batch,
    )
""")


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The module above on the import path, registered for this test only."""
    (tmp_path / "toy_family.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.add_family("toy_family")
    yield tmp_path
    registry.unregister("toy")
    sys.modules.pop("toy_family", None)


def test_a_family_declared_in_one_module_is_found_everywhere(throwaway: Path) -> None:
    assert {"toy-base", "toy-base-tiny"} <= set(presets())
    assert get("toy-base-tiny").make_config().dim == 3
    check_tiny_twin("toy-base-tiny")
    model = registry.build("toy-base-tiny")
    model.save(throwaway / "saved")
    loaded = load_model(throwaway / "saved")
    assert type(loaded).__name__ == "Toy" and loaded.config.dim == 3
    torch.testing.assert_close(loaded.proj.weight, model.proj.weight)


def test_the_tiny_twin_test_picks_up_a_family_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "toy_family.py").write_text(THROWAWAY)
    env = {**os.environ, registry.FAMILIES_ENV: "toy_family",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", __file__,
         "-k", "test_tiny_forward_backward and toy"],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1], timeout=300,
    )
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


def test_a_family_package_without_its_record_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "not_a_family.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match="not_a_family: defines no FAMILY"):
        registry.add_family("not_a_family")
    sys.modules.pop("not_a_family", None)


def test_unknown_names_get_a_suggestion() -> None:
    with pytest.raises(KeyError, match="did you mean 'shakespeare-char'"):
        get("shakespear-char")
    with pytest.raises(KeyError, match="did you mean 'gpt'"):
        registry.family("gtp")
