"""One intra-op thread for the engine tests: the tiny models gain nothing from more, and on a busy
2-core machine two spinning OpenMP threads per process made each step about 10x slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
