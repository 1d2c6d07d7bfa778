"""Learning-rate schedules: values at chosen steps equal their formulas."""

from __future__ import annotations

import math

import pytest

from glassformer.train import TrainConfig, make_schedule
from glassformer.utils.config import ConfigError


def lr_at(**kw):
    return make_schedule(TrainConfig(**kw))


def test_constant_with_warmup() -> None:
    f = lr_at(schedule="constant", lr=0.1, warmup_steps=4, max_steps=100)
    assert [f(s) for s in range(6)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    assert f(99) == 0.1


def test_cosine_to_floor() -> None:
    lr, floor, w, d = 1e-3, 1e-4, 10, 110
    f = lr_at(schedule="cosine", lr=lr, min_lr_ratio=0.1, warmup_steps=w, max_steps=200, decay_steps=d)
    assert f(0) == pytest.approx(lr / w)
    assert f(w - 1) == pytest.approx(lr)
    for step in (10, 35, 60, 85, 109):
        p = (step - w) / (d - w)
        assert f(step) == pytest.approx(floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * p)), rel=1e-12)
    assert f(60) == pytest.approx((lr + floor) / 2)  # half way down
    assert f(d) == pytest.approx(floor) and f(199) == pytest.approx(floor)  # stays at the floor


def test_cosine_decays_over_max_steps_by_default() -> None:
    f = lr_at(schedule="cosine", lr=2.0, min_lr_ratio=0.0, max_steps=100)
    assert f(0) == 2.0 and f(50) == pytest.approx(1.0) and f(100) == pytest.approx(0.0, abs=1e-15)


def test_linear_decay() -> None:
    f = lr_at(schedule="linear", lr=1.0, min_lr_ratio=0.2, warmup_steps=5, max_steps=25)
    for step in (5, 10, 15, 20, 25, 30):
        p = min(1.0, (step - 5) / 20)
        assert f(step) == pytest.approx(0.2 + 0.8 * (1 - p))
    assert f(2) == pytest.approx(3 / 5)


def test_inverse_sqrt_is_the_papers_formula() -> None:
    d_model, warmup = 512, 4000
    f = lr_at(schedule="inverse_sqrt", lr=(d_model * warmup) ** -0.5, warmup_steps=warmup, max_steps=100_000)
    for n in (1, 100, 3999, 4000, 4001, 10_000, 99_999):  # the paper counts steps from 1
        paper = d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)
        assert f(n - 1) == pytest.approx(paper, rel=1e-12)
    assert max(f(s) for s in range(0, 8000, 7)) <= f(warmup - 1) * (1 + 1e-12)  # the peak ends warmup


def test_invalid_schedule_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="warmup_steps"):
        TrainConfig(schedule="inverse_sqrt", warmup_steps=0)
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5)
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="exponential")  # type: ignore[arg-type]
