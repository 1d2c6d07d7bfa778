"""``glassformer presets``: list the registered model presets."""

from __future__ import annotations

import argparse

from glassformer.utils.commands import AddParser


def register(add_parser: AddParser) -> None:
    p = add_parser("presets", help="list the model presets (each has a -tiny twin)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from glassformer.registry import presets

    for name, preset in presets().items():
        print(f"{name:28s} {preset.family:10s} {preset.description}")
    return 0
