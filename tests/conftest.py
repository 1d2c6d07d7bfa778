"""Run every test on one torch thread.

These tests push tiny tensors through many small ops. With ``pytest -n 2`` on a 2-core machine,
each worker's default of one OpenMP thread per core oversubscribes the CPU, and the threads spend
their time waiting at barriers (a 60-step training test went from ~1 s to over a minute). One
thread per worker keeps the suite fast; the setting is restored after each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

# precision=auto trains in fp32 on every CI machine, AMX or not: many tests compare runs to 1e-6.
# tests/train/test_precision.py exercises bf16 autocast explicitly. Subprocesses inherit it.
os.environ.setdefault("GLASSFORMER_CPU_BF16", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``heavy`` tests (minutes of a reference library's own conversion) unless asked for.

    They check what a cheaper test already covers a second way (e.g. transformers converting a
    whole GGUF file itself); ``GLASSFORMER_HEAVY_TESTS=1 make test`` runs them.
    """
    if os.environ.get("GLASSFORMER_HEAVY_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="heavy reference run: set GLASSFORMER_HEAVY_TESTS=1 to include it")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
