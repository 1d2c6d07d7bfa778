"""Kill a training process (SIGKILL mid-step, SIGTERM, SIGKILL half-way through a checkpoint
write) and resume it: the final weights are bitwise those of a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassformer.train import latest_checkpoint
from glassformer.train.checkpoint import load_train_state

from .tiny import TinyLM

SCRIPT = Path(__file__).with_name("train_script.py")
pytestmark = pytest.mark.slow


def run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), str(out), *args], capture_output=True, text=True,
                          timeout=180, env=env)


def assert_bitwise_equal(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for k in x:
        assert torch.equal(x[k], y[k]), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    done = run(out / "run", "--dump-weights", str(out / "final.safetensors"))
    assert done.returncode == 0, done.stderr
    return out / "final.safetensors"


def test_sigkill_mid_step_then_resume_is_bitwise_equal(tmp_path: Path, reference: Path) -> None:
    killed = run(tmp_path / "run", "--signal-at", "7:SIGKILL")
    assert killed.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000006"
    resumed = run(tmp_path / "run", "--resume", "--dump-weights", str(tmp_path / "final.safetensors"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "step 6" in resumed.stdout
    assert_bitwise_equal(reference, tmp_path / "final.safetensors")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 11))  # no duplicates


def test_sigterm_finishes_the_step_saves_and_resumes_bitwise(tmp_path: Path, reference: Path) -> None:
    stopped = run(tmp_path / "run", "--signal-at", "7:SIGTERM")
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "stopped by SIGTERM after step 7" in stopped.stdout and "Resume with:" in stopped.stdout
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "step-00000007"
    resumed = run(tmp_path / "run", "--resume", "--dump-weights", str(tmp_path / "final.safetensors"))
    assert resumed.returncode == 0, resumed.stderr
    assert_bitwise_equal(reference, tmp_path / "final.safetensors")


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path: Path, reference: Path) -> None:
    root = tmp_path / "run" / "checkpoints"
    killed = run(tmp_path / "run", "--kill-in-save", "4")
    assert killed.returncode == -signal.SIGKILL
    partial = [p for p in root.iterdir() if p.name.startswith(".tmp-step-00000004")]
    assert len(partial) == 1 and (partial[0] / "model.safetensors").is_file()  # it died half-way
    assert latest_checkpoint(root) == root / "step-00000002"  # the half-written one is invisible
    assert load_train_state(root / "step-00000002")["step"] == 2  # and the previous one loads
    TinyLM.load(root / "step-00000002")
    resumed = run(tmp_path / "run", "--resume", "--dump-weights", str(tmp_path / "final.safetensors"))
    assert resumed.returncode == 0, resumed.stderr
    assert "step-00000002" in resumed.stdout
    assert not any(p.name.startswith(".tmp-") for p in root.iterdir())
    assert_bitwise_equal(reference, tmp_path / "final.safetensors")
