"""The ``glassformer`` command line: a thin layer over library calls.

Each verb lives beside the code it drives, in a module with a ``register(add_parser)`` function
(for example ``glassformer.tokenizers.cli``). This file lists the shared modules and takes each
family's from its ``Family`` record, so the help shows exactly the verbs that exist.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add the verbs every family shares, in the order the help lists them; each family's
# own verbs come after, from the ``cli`` of its ``Family`` record.
COMMAND_MODULES: tuple[str, ...] = (
    "glassformer.registry_cli",
    "glassformer.tokenizers.cli",
    "glassformer.data.cli",
    "glassformer.train.cli",
    "glassformer.generate.cli",
    "glassformer.translation.cli",
    "glassformer.viz.cli",
    "glassformer.demo",
    "glassformer.lab.cli",
    "glassformer.rag.cli",
    "glassformer.quant.cli",
)


def command_modules() -> list[str]:
    """The shared verbs' modules, then the families' (``Family.cli``)."""
    from glassformer.registry import families

    return [*COMMAND_MODULES, *(f.cli for f in families().values() if f.cli)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glassformer",
        description="The transformer family from scratch in PyTorch: train, load, generate, look inside.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(sub.add_parser)
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
        message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError quotes its text
        print(f"glassformer {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
