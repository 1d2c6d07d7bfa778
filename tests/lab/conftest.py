"""One tiny lab per test module: random GPT/BERT models written to the lab's own folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("gradio", reason="the lab needs gradio (pip install -e '.[dev]', or make venv)")

from glassformer.lab.app import tiny_context  # noqa: E402
from glassformer.lab.context import LabContext  # noqa: E402
from glassformer.lab.limits import Limits  # noqa: E402


@pytest.fixture(scope="module")
def ctx() -> Iterator[LabContext]:
    import shutil

    context = tiny_context(Limits(max_new_tokens=64))
    yield context
    shutil.rmtree(context.workdir, ignore_errors=True)
