"""`glassformer train`: preset lookup, YAML + key=value overrides, data builders, resume, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from glassformer import registry
from glassformer.cli import main

from .tiny import TinyConfig, TinyLM, make_dataset

PRESET = "engine-test-tiny"


@pytest.fixture
def preset() -> Iterator[dict]:
    """A family (one preset and its data builder) registered for this test only."""
    calls: dict = {}

    def builder(train_config, model_config, request):
        calls.update(options=dict(request.options), dim=model_config.dim, lr=train_config.lr)
        n = int(request.options.get("n", 32))
        return make_dataset(n), make_dataset(16, seed=1)

    def example_batch(config: TinyConfig) -> dict:
        return {k: v[None] for k, v in make_dataset(1)[0].items()}

    registry.register(registry.Family(
        name="engine-test", model=TinyLM, config=TinyConfig,
        presets={"engine-test": (TinyConfig, "a preset for the training-engine tests")}, tiny=lambda c: c,
        example_batch=example_batch, data={"engine-test": builder}, default_preset=PRESET,
    ))
    yield calls
    registry.unregister("engine-test")


def test_train_verb_with_yaml_overrides_and_resume(tmp_path: Path, preset: dict) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("max_steps: 3\nlr: 0.01\nbatch_size: 4\nprogress: false\nplot: true\n"
                         "model:\n  n_layers: 1\ndata:\n  n: 40\n")
    out = tmp_path / "out"
    argv = ["train", PRESET, "--config", str(yaml_file), f"out_dir={out}", "lr=0.002", "model.dim=8", "data.n=24"]
    assert main(argv) == 0
    assert preset == {"options": {"n": 24}, "dim": 8, "lr": 0.002}
    saved = json.loads((out / "checkpoints" / "step-00000003" / "config.json").read_text())
    assert saved["family"] == "tiny-test" and saved["dim"] == 8 and saved["n_layers"] == 1
    assert (out / "curves.png").is_file() and (out / "log.jsonl").is_file()
    # the family name trains its default preset; --resume continues at step 3
    assert main(["train", "engine-test", "--config", str(yaml_file), f"out_dir={out}", "lr=0.002",
                 "model.dim=8", "max_steps=5", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 5


def test_errors_name_the_problem(tmp_path: Path, preset: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", PRESET, "lerning_rate=1", f"out_dir={tmp_path}"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["train", PRESET, "model.width=3", f"out_dir={tmp_path}"]) == 2
    assert "dim" in capsys.readouterr().err  # lists TinyConfig's fields
    assert main(["train", "no-such-preset"]) == 2
    assert "known presets" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", PRESET, f"out_dir={out}", "max_steps=2", "progress=false", "plot=false"]) == 0
    assert main(["train", PRESET, f"out_dir={out}", "max_steps=4", "model.dim=8", "--resume"]) == 2
    assert "dim: checkpoint=16, now=8" in capsys.readouterr().err


def test_example_data_trains_any_preset(tmp_path: Path, preset: dict) -> None:
    out = tmp_path / "ex"
    assert main(["train", PRESET, "--data", "example", f"out_dir={out}", "max_steps=2", "progress=false",
                 "plot=false", "eval_interval=1", "eval_batches=1", "log_interval=1"]) == 0
    records = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["train", "eval", "train", "eval"]
    assert "options" not in preset  # the family's builder was not used
