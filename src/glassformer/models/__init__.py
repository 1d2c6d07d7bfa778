"""Model families, each one package here declaring a ``FAMILY`` record (see ``glassformer.registry``).

``load_model(source)`` opens any model: a glassformer folder (``config.json`` naming its ``family``
+ ``model.safetensors``), a Hugging Face folder of an architecture some family reads, a packaged
model or a hub id. Tools such as the attention explainer work on every family without knowing them.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from glassformer import registry
from glassformer.utils.weights import FolderConfig, read_config, resolve


def _check_family(found: str, wanted: str | None, folder: os.PathLike[str] | str) -> None:
    if wanted is not None and found != wanted:
        raise ValueError(f"{folder} holds a {found} checkpoint, not a {wanted} one")


def open_folder(config: FolderConfig, *, family: str | None = None, map_location: str = "cpu",
                **overrides: Any) -> nn.Module:
    """The model of a folder whose ``config.json`` has been read (see :func:`load_model`)."""
    if config.kind == "glassformer":
        record = registry.family(str(config.family))
        _check_family(record.name, family, config.folder)
        if overrides:
            raise TypeError(f"{config.folder} is a glassformer folder; its config is fixed (got {sorted(overrides)})")
        if "quantization" in config.data:  # written by glassformer.quant.save_quantized
            from glassformer.quant.io import open_quantized

            return open_quantized(config, map_location=map_location)
        return record.model.from_folder(config, map_location=map_location)  # type: ignore[attr-defined]
    record, fmt = registry.format_for(model_type=config.model_type)
    _check_family(record.name, family, config.folder)
    return registry.import_path(fmt.load)(config.folder, **overrides)


def load_model(source: str | os.PathLike[str], *, family: str | None = None, map_location: str = "cpu",
               **overrides: Any) -> nn.Module:
    """Open a model from a folder, a packaged model or a hub id, whichever family it belongs to.

    ``family``: refuse a model of any other family (with a message saying what was found).
    ``overrides``: config fields for a Hugging Face import (e.g. ``head="sequence"``).
    """
    return open_folder(read_config(resolve(source)), family=family, map_location=map_location, **overrides)

