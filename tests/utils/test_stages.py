"""The benchmarks' stage loop: a stage done before is skipped, its numbers saved as it ends."""

from __future__ import annotations

from glassformer.utils.stages import run_stages


def test_stages_run_in_order_and_each_is_saved_as_it_ends() -> None:
    saved: list[list[str]] = []
    results = run_stages({}, ["a", "b"], lambda s: {s: s.upper()}, lambda r: saved.append(list(r["stages_done"])))
    assert results["a"] == "A" and results["b"] == "B"
    assert saved == [["a"], ["a", "b"]]
    assert results["a_stage_seconds"] >= 0


def test_a_stage_done_before_is_skipped_unless_redone(capsys) -> None:
    ran: list[str] = []

    def run(stage: str) -> dict:
        ran.append(stage)
        return {stage: len(ran)}

    results = {"stages_done": ["a"], "a": 0}
    run_stages(results, ["a", "b"], run, lambda r: None)
    assert ran == ["b"] and results["a"] == 0
    assert "--redo a" in capsys.readouterr().out
    run_stages(results, ["a"], run, lambda r: None, redo=["a"])
    assert ran == ["b", "a"] and results["a"] == 2
