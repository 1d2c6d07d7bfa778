"""Training to a wall-clock budget: the step count a budget buys, and the timing run behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from glassformer.train.budget import seconds_per_step, steps_for_minutes

from .tiny import build, make_dataset


def test_steps_fill_the_budget_after_the_reserve() -> None:
    assert steps_for_minutes(10, 0.5) == int(600 * 0.97 / 0.5)
    assert steps_for_minutes(10, 0.5, reserve=60) == int((600 * 0.97 - 60) / 0.5)
    assert steps_for_minutes(0.01, 10.0, at_least=7) == 7  # a budget too small still trains something
    with pytest.raises(ValueError, match="positive budget"):
        steps_for_minutes(0, 1.0)


def test_the_timing_run_leaves_the_model_untouched_and_can_repeat(tmp_path: Path) -> None:
    model = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first = seconds_per_step(model, make_dataset(64), batch_size=4, work_dir=tmp_path, steps=6)
    again = seconds_per_step(model, make_dataset(64), batch_size=4, work_dir=tmp_path, steps=6)  # no resume refusal
    assert first > 0 and again > 0
    assert all((model.state_dict()[k] == v).all() for k, v in before.items())  # it trained a copy
    with pytest.raises(ValueError, match="at least 4 steps"):
        seconds_per_step(model, make_dataset(8), batch_size=4, work_dir=tmp_path, steps=2)
