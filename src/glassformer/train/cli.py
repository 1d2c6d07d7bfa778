"""``glassformer train``: train a registered preset with the one engine.

::

    glassformer train PRESET_OR_FAMILY [--config run.yaml] [key=value ...] [--data NAME] [--resume]
    torchrun --nproc_per_node=2 -m glassformer.cli train PRESET ...      # the same run on 2 processes

- ``PRESET_OR_FAMILY``: a name from ``glassformer presets``, or a family whose ``Family`` record
  names a ``default_preset`` (or another training name, such as ``bert-mlm``).
- ``--config``: a YAML file whose top-level keys are ``TrainConfig`` fields, plus optional
  ``model:`` (model config fields) and ``data:`` (options for the family's data builder) mappings.
- ``key=value`` overrides the file: ``lr=1e-3`` sets a ``TrainConfig`` field, ``model.n_layers=4``
  a model field, ``data.block_size=256`` a data option. Unknown keys are errors that list the
  valid ones and guess the meant one; a model field given as a training key (or the reverse) is
  named with the spelling that works.
- ``--data NAME`` picks another of the family's data builders; ``--data example`` trains on the preset's
  random example batches (a smoke test and throughput probe).
- ``--resume`` continues from the newest complete checkpoint in ``out_dir``;
  ``--resume-from DIR`` from a given checkpoint folder.

``out_dir`` defaults to ``out/<preset>``. Exit status: 0 when done, 1 when the loss diverged,
128 + signal number when stopped by SIGINT/SIGTERM (after saving a checkpoint).
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Any

import yaml

from glassformer.utils.commands import AddParser
from glassformer.utils.config import ConfigError
from glassformer.utils.suggest import did_you_mean

SECTIONS = ("model", "data")  # the dotted override prefixes: model.KEY=..., data.KEY=...


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML file: TrainConfig keys, optional model: and data: sections")
    p.add_argument("--data", help="data builder to use instead of the preset's/family's (e.g. example)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in out_dir")
    p.add_argument("--resume-from", type=Path, metavar="DIR", help="continue from this checkpoint folder")


def register(add_parser: AddParser) -> None:
    p = add_parser(
        "train",
        help="train a model preset (checkpoints, exact resume, torchrun DDP, curves)",
        description=(__doc__ or "").replace("``", "`").replace("::", ":"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="PRESET_OR_FAMILY", help="a preset name (see `glassformer presets`) or a family")
    # everything after the target, options and overrides in any order (parsed again in run)
    p.add_argument("overrides", nargs=argparse.REMAINDER, metavar="key=value",
                   help="TrainConfig fields (lr=1e-3), model.FIELD=..., data.OPTION=...")
    _add_options(p)
    p.set_defaults(func=run)


def _parse_rest(args: argparse.Namespace) -> None:
    """Options may come after the overrides (``... lr=1e-3 --resume``): parse the tail intermixed."""
    inner = argparse.ArgumentParser(prog="glassformer train", add_help=False)
    inner.add_argument("overrides", nargs="*")
    _add_options(inner)
    tail = inner.parse_intermixed_args(args.overrides)
    for name in ("config", "data", "resume_from"):
        if getattr(tail, name) is not None:
            setattr(args, name, getattr(tail, name))
    args.resume = args.resume or tail.resume
    args.overrides = tail.overrides


def _split_overrides(items: list[str]) -> tuple[list[str], list[str], dict[str, Any]]:
    train, model, data = [], [], {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        if key.startswith("model."):
            model.append(f"{key[len('model.'):]}={value}")
        elif key.startswith("data."):
            data[key[len("data."):]] = yaml.safe_load(value)
        elif "." in key:  # no TrainConfig field has a dot: a mistyped section
            section = key.split(".", 1)[0]
            raise ConfigError(f"override {item!r}: unknown section {section!r}{did_you_mean(section, SECTIONS)}; "
                              "write model.KEY=VALUE, data.KEY=VALUE or a TrainConfig KEY=VALUE")
        else:
            train.append(item)
    return train, model, data


def _check_placement(train_keys: list[str], model_keys: list[str], train_fields: list[str], model_config: Any) -> None:
    """A model field given as a training key (or the reverse) is named with the spelling that works.

    Without this, ``n_layers=4`` would only list TrainConfig's fields, none of which is meant.
    """
    model_fields, owner = model_config.valid_keys(), type(model_config).__name__
    for key in train_keys:
        if key not in train_fields and key in model_fields:
            raise ConfigError(f"{key!r} is a field of the model config ({owner}), not of TrainConfig: write "
                              f"model.{key}=VALUE (in a YAML file: under model:)")
    for key in model_keys:
        if key not in model_fields and key in train_fields:
            raise ConfigError(f"model.{key}: {key!r} is a TrainConfig field, not one of {owner}: write "
                              f"{key}=VALUE (in a YAML file: at the top level)")


def _read_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    for section in ("model", "data"):
        if not isinstance(data.get(section, {}), dict):
            raise ConfigError(f"{path}: the {section}: section must be a mapping of key: value")
    return data


def _resume_command(args: argparse.Namespace) -> str:
    words = ["glassformer", "train", args.target]
    if args.config:
        words += ["--config", str(args.config)]
    if args.data:
        words += ["--data", args.data]
    words += list(args.overrides) + ["--resume"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        words = ["torchrun", f"--nproc_per_node={world}", "-m", "glassformer.cli"] + words[1:]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from glassformer import registry
    from glassformer.train.config import TrainConfig
    from glassformer.train.trainer import NonFiniteLossError, Trainer, seed_everything

    _parse_rest(args)
    preset = registry.resolve_target(args.target)

    file_values = _read_yaml(args.config)
    model_section = file_values.pop("model", {}) or {}
    data_section = file_values.pop("data", {}) or {}
    train_over, model_over, data_over = _split_overrides(args.overrides)
    model_config = preset.make_config()
    _check_placement([*file_values, *(o.split("=", 1)[0] for o in train_over)],
                     [*model_section, *(o.split("=", 1)[0] for o in model_over)], TrainConfig.valid_keys(), model_config)
    source = str(args.config) if args.config else "config"
    train_config = TrainConfig.from_dict(file_values, source=source).with_overrides(train_over)
    if "out_dir" not in file_values and not any(o.startswith("out_dir=") for o in train_over):
        train_config = train_config.replace(out_dir=str(Path("out") / preset.name))

    if model_section:
        model_config = model_config.replace(**model_section)
    if model_over:
        model_config = model_config.with_overrides(model_over)

    builder = registry.data_builder(preset, args.data)
    seed_everything(train_config.seed)  # a reproducible initialization
    model = preset.build(model_config)
    request = registry.DataRequest(preset, {**data_section, **data_over})
    train_data, eval_data = builder(train_config, model_config, request)

    trainer = Trainer(model, train_config, train_data, eval_data, model_config=model_config,
                      resume_hint=_resume_command(args))
    try:
        summary = trainer.fit(resume=args.resume_from or args.resume)
    except NonFiniteLossError:
        return 1  # the trainer has printed the step, the last good checkpoint and advice
    if summary.stop_reason.startswith("signal:"):
        import signal

        return 128 + int(signal.Signals[summary.stop_reason.split(":", 1)[1]])
    return 0
