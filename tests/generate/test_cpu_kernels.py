"""``GenerationConfig.cpu_kernels``: the in-place switch to FastLinear is announced once and can be refused."""

from __future__ import annotations

import logging

import pytest
from torch import nn

from glassformer.generate import generate
from glassformer.kernels import FastLinear, available, unavailable_reason, use_torch_linear
from tests.generate.conftest import tiny_gpt

pytestmark = pytest.mark.skipif(not available(), reason=f"C kernels unavailable: {unavailable_reason()}")


def _linear_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, nn.Linear)}


def test_the_first_switch_logs_one_line_and_the_opt_out_leaves_the_model_alone(caplog):
    model = tiny_gpt()
    kept = generate(model, [3, 1, 4], max_new_tokens=6, cpu_kernels=False).tokens
    assert _linear_types(model) == {nn.Linear}
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    with caplog.at_level(logging.INFO, logger="glassformer.generate"):
        assert generate(model, [3, 1, 4], max_new_tokens=6).tokens == kept
        generate(model, [3, 1, 4], max_new_tokens=6)  # nothing left to switch: nothing said
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("glassformer.generate")]
    assert len(lines) == 1
    assert f"switched {n_linear} nn.Linear layers of GPT to glassformer.kernels.FastLinear" in lines[0]
    assert "use_torch_linear(model)" in lines[0] and "cpu_kernels=False" in lines[0]
    assert _linear_types(model) == {FastLinear}
    assert use_torch_linear(model) == n_linear and _linear_types(model) == {nn.Linear}
