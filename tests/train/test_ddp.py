"""torchrun --nproc_per_node=2 on CPU (gloo, loopback) equals one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("train_script.py")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    common = ["--max-steps", "6", "--accum", "2", "--dropout", "0"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={free_port()}", str(SCRIPT), str(tmp_path / "ddp"), "--batch-size", "2", *common,
         "--dump-weights", str(tmp_path / "ddp-rank{rank}.safetensors")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "one"), "--batch-size", "4", *common,
         "--dump-weights", str(tmp_path / "one.safetensors")],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / f"ddp-rank{r}.safetensors")) for r in (0, 1))
    one = load_file(str(tmp_path / "one.safetensors"))
    for k in one:
        assert torch.equal(rank0[k], rank1[k]), f"ranks disagree on {k}"
        torch.testing.assert_close(rank0[k], one[k], atol=1e-6, rtol=0, msg=k)
    # only rank 0 wrote: one log record per step, one set of checkpoints
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 7))
    assert "2 x cpu" in ddp.stdout and ddp.stdout.count("glassformer train:") == 1
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stop_reason"] == "max_steps"
