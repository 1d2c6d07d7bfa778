"""Dataclass configs that save as JSON, load from YAML and take ``key=value`` overrides.

Every config in glassformer (model configs, ``TrainConfig``) is a plain dataclass that inherits
``ConfigMixin``. Unknown keys are always an error that lists the valid ones and guesses the meant
one (``max_stpes`` -> ``max_steps``), because a silently ignored typo costs a whole training run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Self, get_args, get_origin

import yaml

from glassformer.utils.suggest import did_you_mean


class ConfigError(ValueError):
    """A config field is unknown, has the wrong type or an invalid value."""


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def unknown_keys_message(unknown: list[str], valid: list[str], owner: str) -> str:
    """``unknown key 'max_stpes' (did you mean 'max_steps'?) for TrainConfig; valid keys: [...]``."""
    named = ", ".join(f"{key!r}{did_you_mean(key, valid)}" for key in unknown)
    return f"unknown key{'s' if len(unknown) > 1 else ''} {named} for {owner}; valid keys: {sorted(valid)}"


def _parse_scalar(text: str, annotation: Any, key: str) -> Any:
    """Turn the text of a ``key=value`` override into the field's type."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _parse_scalar(text, non_none[0], key)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{key}={text!r}: must be one of {list(args)}")
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}={text!r}: expected true or false")
    if annotation is int:
        try:
            return int(float(text)) if "e" in text.lower() else int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected an integer") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected a number") from None
    if annotation is str:
        return text
    # lists, tuples, dicts: accept YAML/JSON syntax, e.g. betas=[0.9,0.95]
    return yaml.safe_load(text)


class ConfigMixin:
    """Mixin for config dataclasses: dict/JSON/YAML round trips with strict key checking."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def valid_keys(cls) -> list[str]:
        return sorted(_field_types(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> Self:
        """Build from a dict; unknown keys raise an error listing the valid ones."""
        valid = _field_types(cls)
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"{source}: {unknown_keys_message(unknown, list(valid), cls.__name__)}")
        values = {}
        for key, value in data.items():
            if isinstance(value, list) and get_origin(valid[key]) is tuple:
                value = tuple(value)
            values[key] = value
        return cls(**values)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (``__post_init__`` checks run again)."""
        unknown = sorted(set(changes) - set(_field_types(type(self))))
        if unknown:
            raise ConfigError(unknown_keys_message(unknown, self.valid_keys(), type(self).__name__))
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def with_overrides(self, overrides: list[str]) -> Self:
        """Apply command-line overrides of the form ``key=value``."""
        types_ = _field_types(type(self))
        changes: dict[str, Any] = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form key=value")
            key, text = item.split("=", 1)
            key = key.strip()
            if key not in types_:
                raise ConfigError(unknown_keys_message([key], list(types_), type(self).__name__))
            changes[key] = _parse_scalar(text.strip(), types_[key], key)
        return self.replace(**changes)

    def save_json(self, path: str | os.PathLike[str]) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> Self:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> Self:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
        cfg = cls.from_dict(data, source=str(path))
        return cfg.with_overrides(overrides or [])


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see either the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
