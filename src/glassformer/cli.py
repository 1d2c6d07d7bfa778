"""The ``glassformer`` command line: a thin layer over library calls.

Each verb lives beside the code it drives, in a module with a ``register(subparsers)`` function
(for example ``glassformer.tokenizers.cli``). This file only lists those modules, so the help
shows exactly the verbs that exist.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add verbs, in the order the help lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "glassformer.registry_cli",
    "glassformer.tokenizers.cli",
    "glassformer.data.cli",
    "glassformer.train.cli",
    "glassformer.generate.cli",
    "glassformer.models.bert.cli",
    "glassformer.viz.cli",
    "glassformer.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glassformer",
        description="The transformer family from scratch in PyTorch: train, load, generate, look inside.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name or (err.name and name.startswith(err.name + ".")):
                continue  # that part of glassformer is not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, TypeError, KeyError) as err:
        print(f"glassformer {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
