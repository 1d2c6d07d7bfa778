"""The stage loop of the long benchmarks: each stage's numbers are stored the moment it ends.

A benchmark that runs for hours is cut into stages (``measure``, ``train``, ``sweep``, ...). Each
one's results go into the results file as soon as it finishes, and a rerun skips the stages already
done (``redo`` names the ones to run again), so a run stopped halfway loses only the stage it was in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


def run_stages(
    results: dict[str, Any],
    stages: Iterable[str],
    run: Callable[[str], dict[str, Any]],
    save: Callable[[dict[str, Any]], None],
    redo: Iterable[str] = (),
) -> dict[str, Any]:
    """Run each stage not in ``results["stages_done"]`` (or in ``redo``): merge what ``run(stage)``
    returns into ``results``, with ``<stage>_stage_seconds``, and ``save(results)`` after each."""
    redo = set(redo)
    for stage in stages:
        if stage in results.get("stages_done", []) and stage not in redo:
            print(f"[{stage}] done before; skipped (--redo {stage} to run it again)", flush=True)
            continue
        print(f"[{stage}] running", flush=True)
        start = time.perf_counter()
        results.update(run(stage))
        results[f"{stage}_stage_seconds"] = time.perf_counter() - start
        results["stages_done"] = sorted(set(results.get("stages_done", [])) | {stage})
        save(results)
    return results
