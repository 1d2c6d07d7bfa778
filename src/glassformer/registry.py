"""The one place that knows the families: each declares a :class:`Family` record, found from here.

A family is a package ``glassformer/models/<name>/`` whose ``__init__`` defines ``FAMILY``.
:func:`families` imports every such package once (a package without the record is an error that
names it), plus any module listed in ``$GLASSFORMER_FAMILIES`` (comma-separated: a family
developed outside the tree, or a test's throwaway one) and any given to :func:`add_family`.
Everything that needs to know the families derives from these records: ``glassformer presets``,
:func:`glassformer.models.load_model`, the loaders of ``generate``, the CLI's verbs, ``glassformer
train``'s data, the Hugging Face export test and ``tests/test_registry.py``'s tiny-twin test.
``docs/adding-a-family.md`` is the recipe.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from glassformer.utils.suggest import did_you_mean

Generation = Literal["decoder", "encoder-decoder"]
FAMILIES_ENV = "GLASSFORMER_FAMILIES"


def import_path(target: str | Callable[..., Any]) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported on first use); callables pass through."""
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"{target!r} is not of the form 'package.module:attribute'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Format:
    """A checkpoint format other than glassformer's own folder, read (and maybe written) by a family.

    ``load(path, **overrides) -> model``; ``save(model, folder, tokenizer=None) -> folder``;
    ``bundle(path) -> (model, tokenizer, chat_template)`` for formats that carry their tokenizer
    (GGUF). A folder in this format is recognised by its ``config.json`` ``model_type``
    (``model_types``), a file by its suffix (``suffixes``). ``exports(config) -> str`` names the
    architecture a config is saved as, or raises ``ValueError`` saying why it cannot be.
    """

    name: str
    load: str | Callable[..., nn.Module]
    save: str | Callable[..., Path] | None = None
    bundle: str | Callable[..., tuple[nn.Module, Any, str | None]] | None = None
    model_types: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    exports: str | Callable[[Any], str] | None = None


@dataclass(frozen=True)
class Family:
    """Everything the rest of glassformer needs to know about one model family.

    ``presets``: name -> ``(make_config, description)``; every preset gets a ``-tiny`` twin made by
    ``tiny(config)``. ``example_batch(config)`` gives keyword arguments for ``model(**batch)``,
    whose output has ``.loss``. ``data``: preset or family name -> ``"module:function"`` data
    builder for ``glassformer train`` (see :class:`DataRequest`); ``default_preset`` lets
    ``glassformer train <family>`` work, and ``aliases`` are more such names (``bert-mlm``). ``formats``: Hugging Face, GGUF, ... ``cli``: a module with
    ``register(subparsers)`` adding the family's verbs. ``generation``: how ``generate`` drives the
    model (None: the family does not generate text). ``chat_model``: ``"module:function"`` returning
    ``(model, tokenizer, chat_template, name)`` for ``glassformer chat`` without a checkpoint.
    """

    name: str
    model: type[nn.Module]
    config: type
    presets: Mapping[str, tuple[Callable[[], Any], str]]
    tiny: Callable[[Any], Any]
    example_batch: Callable[[Any], dict[str, Any]]
    data: Mapping[str, str | Callable[..., Any]] = field(default_factory=dict)
    default_preset: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    formats: tuple[Format, ...] = ()
    cli: str | None = None
    generation: Generation | None = None
    chat_model: str | None = None

    def __post_init__(self) -> None:
        for name in self.presets:
            if name.endswith("-tiny"):
                raise ValueError(f"family {self.name}: preset {name!r}: -tiny twins are made by Family.tiny")
        for label, target in (("default_preset", self.default_preset), *self.aliases.items()):
            if target is not None and target.removesuffix("-tiny") not in self.presets:
                raise ValueError(f"family {self.name}: {label} names {target!r}, which is not one of its presets")

    def format(self, name: str) -> Format | None:
        return next((f for f in self.formats if f.name == name), None)


@dataclass(frozen=True)
class Preset:
    """One named model size: ``build(make_config())`` is a model; ``example_batch(config)`` feeds it."""

    name: str
    family: str
    make_config: Callable[[], Any]
    build: Callable[[Any], nn.Module]
    example_batch: Callable[[Any], dict[str, Any]]
    description: str = ""


@dataclass(frozen=True)
class DataRequest:
    """What ``glassformer train`` hands a family's data builder beside the two configs.

    A builder is ``(train_config, model_config, request) -> (train_data, eval_data)``; ``options``
    are the ``data.KEY=VALUE`` overrides (or the YAML file's ``data:`` section).
    """

    preset: Preset
    options: Mapping[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, Family] = {}
_PRESETS: dict[str, Preset] = {}
_EXTRA_MODULES: list[str] = []
_loaded = False


def _family_packages() -> list[str]:
    import glassformer.models as models

    return [f"glassformer.models.{m.name}" for m in pkgutil.iter_modules(models.__path__) if m.ispkg]


def _record_of(module_name: str) -> Family:
    module = importlib.import_module(module_name)
    record = getattr(module, "FAMILY", None)
    if not isinstance(record, Family):
        where = Path(module.__file__ or module_name).parent if module_name.startswith("glassformer.models.") else module_name
        raise TypeError(
            f"{where}: defines no FAMILY = Family(...) record; every family package declares one "
            "(see docs/adding-a-family.md)"
        )
    return record


def _add(record: Family) -> None:
    if record.name in _FAMILIES and _FAMILIES[record.name] is not record:
        raise ValueError(f"family {record.name!r} is declared twice")
    _FAMILIES[record.name] = record
    for name, (make, description) in record.presets.items():
        twin = f"{name}-tiny"
        for key in (name, twin):
            if key in _PRESETS and _PRESETS[key].family != record.name:
                raise ValueError(f"preset {key!r} of family {record.name} is already a {_PRESETS[key].family} preset")
        _PRESETS[name] = Preset(name, record.name, make, record.model, record.example_batch, description)
        _PRESETS[twin] = Preset(twin, record.name, lambda m=make: record.tiny(m()), record.model,
                                record.example_batch, f"tiny twin of {name} for tests")  # fmt: skip


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: a family module may call back into the registry while importing
    env = [m.strip() for m in os.environ.get(FAMILIES_ENV, "").split(",") if m.strip()]
    for module_name in [*_family_packages(), *env, *_EXTRA_MODULES]:
        _add(_record_of(module_name))


def register(record: Family) -> Family:
    """Add a family record made in code (a notebook's experiment, a test's throwaway family)."""
    _load()
    _add(record)
    return record


def add_family(module_name: str) -> Family:
    """Register the family declared (as ``FAMILY``) by a module outside ``glassformer.models``."""
    _load()
    record = register(_record_of(module_name))
    if module_name not in _EXTRA_MODULES:
        _EXTRA_MODULES.append(module_name)
    return record


def unregister(name: str) -> None:
    """Forget a family added with :func:`register` or :func:`add_family`, and its presets."""
    if _FAMILIES.pop(name, None) is None:
        return
    for preset in [p for p, v in _PRESETS.items() if v.family == name]:
        del _PRESETS[preset]
    for module_name in list(_EXTRA_MODULES):
        record = getattr(importlib.import_module(module_name), "FAMILY", None)
        if getattr(record, "name", None) == name:
            _EXTRA_MODULES.remove(module_name)


def families() -> dict[str, Family]:
    """Every family by name."""
    _load()
    return dict(sorted(_FAMILIES.items()))


def family(name: str) -> Family:
    table = families()
    if name not in table:
        raise KeyError(f"unknown model family {name!r}{did_you_mean(name, table)}; known families: {', '.join(table)}")
    return table[name]


def presets() -> dict[str, Preset]:
    """All presets by name (each family's presets and their ``-tiny`` twins)."""
    _load()
    return dict(sorted(_PRESETS.items()))


def get(name: str) -> Preset:
    table = presets()
    if name not in table:
        raise KeyError(f"unknown preset {name!r}{did_you_mean(name, table)}; known presets: {', '.join(table)}")
    return table[name]


def build(name: str, **overrides: Any) -> nn.Module:
    """Build the model of a preset, optionally changing config fields."""
    preset = get(name)
    config = preset.make_config()
    if overrides:
        config = config.replace(**overrides)
    return preset.build(config)


def resolve_target(name: str) -> Preset:
    """A preset by name, or a family's default preset (``glassformer train gpt``)."""
    table = presets()
    if name in table:
        return table[name]
    for record in families().values():
        if name == record.name and record.default_preset is not None:
            return table[record.default_preset]
        if name in record.aliases:
            return table[record.aliases[name]]
    choices = [*table, *(f for f, r in families().items() if r.default_preset)]
    choices += [a for r in families().values() for a in r.aliases]
    raise KeyError(f"unknown preset or family {name!r}{did_you_mean(name, choices)}; known presets: {', '.join(table)}")


# --------------------------------------------------------------------------------------------
# data for `glassformer train`


def example_data(train_config: Any, model_config: Any, request: DataRequest) -> tuple[Any, Any]:
    """Random batches from the preset's ``example_batch``: a smoke test and a throughput probe.

    Each batch is drawn with the global RNG seeded from the step's generator, so the stream is
    reproducible and the training RNG is left untouched.
    """
    import torch

    make = request.preset.example_batch

    def get_batch(split: str, step: int, generator: torch.Generator) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            return make(model_config)

    return get_batch, get_batch


GENERIC_DATA: dict[str, Callable[..., tuple[Any, Any]]] = {"example": example_data}


def data_builder(preset: Preset, name: str | None = None) -> Callable[..., tuple[Any, Any]]:
    """The data builder for a preset: ``name`` when given (``--data NAME``), else the one its family
    registered for the preset, else the family's default."""
    record = family(preset.family)
    if name is not None:
        if name in GENERIC_DATA:
            return GENERIC_DATA[name]
        if name in record.data:
            return import_path(record.data[name])
        known = sorted({*GENERIC_DATA, *record.data})
        raise KeyError(f"unknown data {name!r}{did_you_mean(name, known)} for family {record.name}; known: {known}")
    base = preset.name.removesuffix("-tiny")
    for key in (preset.name, base, record.name):
        if key in record.data:
            return import_path(record.data[key])
    raise KeyError(
        f"family {record.name} registers no training data for preset {preset.name!r}; "
        "use --data example to train on the preset's random example batches"
    )


# --------------------------------------------------------------------------------------------
# formats


def format_for(*, model_type: str | None = None, suffix: str | None = None) -> tuple[Family, Format]:
    """The family and format that read a Hugging Face ``model_type`` or a file suffix."""
    for record in families().values():
        for fmt in record.formats:
            if (model_type is not None and model_type in fmt.model_types) or (suffix and suffix in fmt.suffixes):
                return record, fmt
    known = sorted({t for r in families().values() for f in r.formats for t in (*f.model_types, *f.suffixes)})
    what = f"model_type {model_type!r}" if model_type is not None else f"files ending in {suffix!r}"
    raise ValueError(f"no glassformer family reads {what}; readable: {', '.join(known)}")
