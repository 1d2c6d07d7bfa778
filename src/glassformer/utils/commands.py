"""The one type the command-line modules share: how a module adds its verbs to ``glassformer``.

Every ``cli.py`` has ``register(add_parser)``, where ``add_parser`` is the ``add_parser`` method of
the top-level subparsers (argparse's own type for that object is private).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

AddParser = Callable[..., argparse.ArgumentParser]
