"""Preset names -> (config, builder).

Every family registers its presets here, each with a ``-tiny`` twin small enough to build, run
forward and backward in a fraction of a second. ``tests/test_registry.py`` walks the registry, so
a family is covered by that test the moment it registers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Preset:
    """One named model size.

    ``make_config`` returns a fresh config; ``build`` turns a config into a model whose forward,
    called with ``example_batch(config)``'s keyword arguments, returns an object with ``.loss``.
    """

    name: str
    family: str
    make_config: Callable[[], Any]
    build: Callable[[Any], nn.Module]
    example_batch: Callable[[Any], dict[str, Any]]
    description: str = ""


_PRESETS: dict[str, Preset] = {}
# Modules whose import registers presets; imported lazily so `import glassformer` stays cheap.
FAMILY_MODULES: tuple[str, ...] = (
    "glassformer.nn.transformer",
    "glassformer.models.gpt",
    "glassformer.models.bert",
)


def register(preset: Preset) -> Preset:
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    _PRESETS[preset.name] = preset
    return preset


def _load_families() -> None:
    import importlib

    for name in FAMILY_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):
                continue  # family not built yet
            raise


def presets() -> dict[str, Preset]:
    """All registered presets by name."""
    _load_families()
    return dict(sorted(_PRESETS.items()))


def get(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(table)}")
    return table[name]


def build(name: str, **overrides: Any) -> nn.Module:
    """Build the model of a preset, optionally changing config fields."""
    preset = get(name)
    config = preset.make_config()
    if overrides:
        config = config.replace(**overrides)
    return preset.build(config)
