"""The tour behind `make demo` runs end to end (a few steps only) and leaves its pictures behind."""

from __future__ import annotations

import re

from glassformer.cli import main


def test_demo_quick(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--max-new-tokens", "150"]) == 0
    printed = capsys.readouterr().out
    # 150 new characters do not fit the 64-position context: the window slides
    assert re.search(r"\[3/4\] 150 characters after the prompt .*sliding", printed)
    for name in ("greedy", "temperature 0.8", "top-k 10", "top-p 0.9", "beam 4"):
        assert f"--- {name} ---" in printed
    for path in ("train/curves.png", "attention_heads.png", "head_view.html", "samples.txt",
                 "model/config.json", "model/model.safetensors"):
        assert (out / path).is_file(), path
