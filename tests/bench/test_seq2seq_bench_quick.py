"""bench/seq2seq.py --quick end to end: every section runs on the tiny twins, is stored, and is
skipped on a rerun; the results file has the issue's keys, BLEU equal to sacrebleu's and beam
outputs equal to transformers'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glassformer.utils.paths import data_file

BENCH = Path(__file__).resolve().parents[2] / "bench" / "seq2seq.py"
KEYS = {"test2016_bleu_en_de", "test2016_bleu_de_en", "bleu_equals_sacrebleu", "train_minutes_en_de",
        "beam_speedup_vs_transformers"}  # fmt: skip
SECTIONS = ("bleu_check", "en_de", "de_en", "pretrain_t5", "pretrain_bart", "speed", "pictures")
PICTURES = ("seq2seq_en_de_val_loss.png", "seq2seq_de_en_val_loss.png", "seq2seq_pretrain_t5.png",
            "seq2seq_pretrain_bart.png", "seq2seq_alignment.png", "seq2seq_alignment_heads.png")  # fmt: skip


def _run(work: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GLASSFORMER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCH), "--quick", "--work-dir", str(work), *extra],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip


def test_quick_mode_runs_every_section_and_resumes(tmp_path: Path) -> None:
    pytest.importorskip("sacrebleu")
    pytest.importorskip("transformers")
    if data_file("multi30k", "task1", "raw", "train.en.gz") is None:
        pytest.skip("Multi30k is not in the shared data folder (multi30k/task1/raw)")
    work = tmp_path / "work"
    first = _run(work, tmp_path / "cache")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    results = json.loads((work / "seq2seq_quick.json").read_text())
    assert KEYS <= set(results) and set(results["sections"]) == set(SECTIONS)
    assert results["bleu_equals_sacrebleu"] is True
    assert all(results[k] is not None for k in KEYS)
    check = results["sections"]["bleu_check"]
    assert check["systems"]["reference"]["sacrebleu"] == 100.0 and "tok:13a" in check["sacrebleu_signature"]
    speed = results["sections"]["speed"]
    assert all(speed["models"][f]["outputs_identical"] for f in ("t5", "bart"))
    en_de = results["sections"]["en_de"]
    assert en_de["length_penalty"] in (0.6, 1.0) and {"greedy", "beam4", "beam5"} <= set(en_de["test2016"])
    assert set(results["sections"]["pretrain_t5"]["arms"]["pretrained"]["test2016"]) == {"en-de", "de-en"}
    for name in PICTURES:
        assert (work / name).stat().st_size > 1000, name
    again = _run(work, tmp_path / "cache", "--sections", "en_de,speed")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "[en_de] done before; skipped" in again.stdout and "[speed] done before; skipped" in again.stdout
    assert (
        json.loads((work / "seq2seq_quick.json").read_text())["test2016_bleu_en_de"]
        == results["test2016_bleu_en_de"]
    )
