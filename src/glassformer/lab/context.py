"""What every tab is built with: the model list, the caps, and a private folder for outputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from glassformer.lab.catalog import Catalog
from glassformer.lab.limits import Limits


@dataclass(frozen=True)
class LabContext:
    """``workdir``: a temporary folder of the lab's own (pictures, uploads), removed on exit.
    ``indexes``: the RAG indexes the operator listed, by name."""

    catalog: Catalog
    limits: Limits
    workdir: Path
    indexes: Mapping[str, Path] = field(default_factory=dict)

    def new_file(self, stem: str, suffix: str) -> Path:
        """A fresh file name in ``workdir``: each request writes its own, so sessions never share one."""
        handle, name = tempfile.mkstemp(prefix=f"{stem}-", suffix=suffix, dir=self.workdir)
        os.close(handle)
        return Path(name)
