"""ConfigMixin: strict keys, typed overrides, JSON/YAML round trips, atomic writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from glassformer.utils.config import ConfigError, ConfigMixin


@dataclass
class Toy(ConfigMixin):
    dim: int = 8
    lr: float = 1e-3
    name: str = "toy"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    bias: bool = True
    betas: tuple[float, float] = (0.9, 0.95)
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ConfigError(f"dim must be positive, got {self.dim}")


def test_overrides_are_typed() -> None:
    cfg = Toy().with_overrides(["dim=16", "lr=3e-4", "norm=rmsnorm", "bias=false", "betas=[0.8,0.9]", "steps=none"])
    assert cfg == Toy(dim=16, lr=3e-4, norm="rmsnorm", bias=False, betas=[0.8, 0.9], steps=None)


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'dimm'.*valid keys: \['betas', 'bias', 'dim'"):
        Toy().with_overrides(["dimm=3"])
    with pytest.raises(ConfigError, match="unknown key"):
        Toy.from_dict({"dim": 3, "colour": "red"})


def test_bad_values_are_named() -> None:
    with pytest.raises(ConfigError, match="norm='batchnorm'"):
        Toy().with_overrides(["norm=batchnorm"])
    with pytest.raises(ConfigError, match="dim='x': expected an integer"):
        Toy().with_overrides(["dim=x"])
    with pytest.raises(ConfigError, match="dim must be positive"):
        Toy().with_overrides(["dim=0"])


def test_json_and_yaml_round_trip(tmp_path) -> None:
    cfg = Toy(dim=12, name="x")
    cfg.save_json(tmp_path / "c.json")
    loaded = Toy.load_json(tmp_path / "c.json")
    assert loaded.dim == 12 and loaded.name == "x" and loaded.betas == (0.9, 0.95)
    (tmp_path / "c.yaml").write_text("dim: 4\nlr: 0.1\n")
    assert Toy.from_yaml(tmp_path / "c.yaml", ["name=y"]) == Toy(dim=4, lr=0.1, name="y")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Toy.from_yaml(tmp_path / "nope.yaml")


def test_unknown_keys_suggest_the_meant_one_on_every_path() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'stpes' \(did you mean 'steps'\?\) for Toy; valid keys"):
        Toy().with_overrides(["stpes=3"])
    with pytest.raises(ConfigError, match=r"^c\.yaml: unknown keys 'colour', 'nmae' \(did you mean 'name'\?\) for Toy"):
        Toy.from_dict({"nmae": "x", "colour": "red"}, source="c.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'betaz' \(did you mean 'betas'\?\)"):
        Toy().replace(betaz=(0.8, 0.9))


def test_no_suggestion_when_nothing_is_close() -> None:
    with pytest.raises(ConfigError) as err:
        Toy().with_overrides(["colour=red"])
    assert "did you mean" not in str(err.value) and "valid keys" in str(err.value)
