"""Tokenizer speed: glassformer's pure-Python BPE and its fast path against the ``tokenizers`` library.

Encoding: 1 MB of text (Tiny Shakespeare followed by Python's help text; the help text alone,
repeated, when the data set is absent) with one vocabulary -- GPT-2's real one from
``gpt2.tiktoken`` when present, else a 4,096-token BPE trained here -- run three ways:

* **pure**: ``ByteLevelBPE`` in pure Python, starting from an empty piece cache each time;
* **fast**: the same object with ``backend="fast"`` (the ``tokenizers`` library under glassformer's
  interface);
* **hf**: the ``tokenizers`` library itself on the very same ``tokenizer.json`` -- the anchor.
  tiktoken is timed too, for reference.

Everything runs single-threaded (``RAYON_NUM_THREADS=1``), on two workloads: the text as one
string, and the text as its ~40,000 lines (``encode_batch``). The reported ratio
``encode_ratio_pure_vs_hf`` is our time divided by the library's on the workload where that ratio
is worse for us (goal: at most 5). The ids of all paths are checked to be identical.

Training: a 4,096-token byte-level BPE on the same 1 MB, ours (``train_bpe``) against the
library's ``BpeTrainer`` (goal for ours: under 30 s).

Run: ``.venv/bin/python bench/tokenizers.py`` (about a minute). Results go to
``bench/results/tokenizers.json`` with ``glassformer.utils.machine.describe()``.
"""

from __future__ import annotations

import os
import sys

os.environ["RAYON_NUM_THREADS"] = "1"  # before the tokenizers library starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# This script is named like the library it measures: keep its own folder off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from glassformer.tokenizers import ByteLevelBPE, train_bpe  # noqa: E402
from glassformer.utils.config import write_text_atomic  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.paths import data_file  # noqa: E402

MB = 1_000_000
ENCODE_GOAL = 5.0
TRAIN_GOAL_S = 30.0


def benchmark_text() -> tuple[str, str]:
    from pydoc_data.topics import topics

    help_text = "\n".join(topics[key] for key in sorted(topics))
    shakespeare = data_file("tinyshakespeare", "input.txt")
    if shakespeare is not None:
        text, source = shakespeare.read_text(encoding="utf-8")[:600_000] + help_text, "tinyshakespeare[:600k] + pydoc topics"
    else:
        text, source = help_text * 3, "pydoc topics x3 (tinyshakespeare absent)"
    data = text.encode("utf-8")[:MB]
    return data.decode("utf-8", errors="ignore"), source


def median_time(fn: Callable[[], object], repeats: int, before: Callable[[], object] = lambda: None) -> float:
    times = []
    for _ in range(repeats):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tokenizers.json"))
    args = parser.parse_args()

    from tokenizers import ByteLevelBPETokenizer, Tokenizer

    text, source = benchmark_text()
    size_mb = len(text.encode("utf-8")) / MB
    lines = text.splitlines(keepends=True)
    print(f"text: {source}, {size_mb:.3f} MB, {len(lines)} lines")

    # ---- training ------------------------------------------------------------------------------
    start = time.perf_counter()
    trained = train_bpe([text], 4096, show_progress=False)
    ours_train = time.perf_counter() - start
    hf_trainer = ByteLevelBPETokenizer()
    start = time.perf_counter()
    hf_trainer.train_from_iterator([text], vocab_size=4096, min_frequency=2, show_progress=False,
                                   special_tokens=["<|endoftext|>"])
    hf_train = time.perf_counter() - start
    print(f"train 4096-token BPE: ours {ours_train:.2f} s, tokenizers {hf_train:.2f} s")

    # ---- encoding ------------------------------------------------------------------------------
    ranks = data_file("tokenizers", "gpt2.tiktoken")
    if ranks is not None:
        pure, vocab_name = ByteLevelBPE.from_tiktoken(ranks), "GPT-2 (gpt2.tiktoken, 50,257 tokens)"
    else:
        pure, vocab_name = trained, "4,096-token BPE trained above (gpt2.tiktoken absent)"
    fast = pure.with_backend("fast")
    hf = Tokenizer.from_str(json.dumps(pure.to_hf_json()))

    workloads: dict[str, dict[str, float]] = {}
    ids: dict[str, list[int]] = {}
    ids["pure"] = pure.encode(text)
    ids["fast"] = fast.encode(text)
    ids["hf"] = hf.encode(text, add_special_tokens=False).ids
    batch_ids = {"pure": pure.encode_batch(lines)["input_ids"], "fast": fast.encode_batch(lines)["input_ids"],
                 "hf": [e.ids for e in hf.encode_batch(lines, add_special_tokens=False)]}
    identical = ids["pure"] == ids["fast"] == ids["hf"] and batch_ids["pure"] == batch_ids["fast"] == batch_ids["hf"]

    def fresh_hf() -> None:  # the library caches pieces too: start it cold like ours
        nonlocal hf
        hf = Tokenizer.from_str(json.dumps(pure.to_hf_json()))

    def fresh_fast() -> None:
        nonlocal fast
        fast = pure.with_backend("fast")
        fast.encode("")  # builds the library's tokenizer outside the timing, with an empty cache

    runs = {
        "one string": {
            "pure": (lambda: pure.encode(text), pure.clear_cache),
            "pure_warm": (lambda: pure.encode(text), lambda: None),
            "fast": (lambda: fast.encode(text), fresh_fast),
            "hf": (lambda: hf.encode(text, add_special_tokens=False), fresh_hf),
        },
        "lines": {
            "pure": (lambda: pure.encode_batch(lines), pure.clear_cache),
            "pure_warm": (lambda: pure.encode_batch(lines), lambda: None),
            "fast": (lambda: fast.encode_batch(lines), fresh_fast),
            "hf": (lambda: hf.encode_batch(lines, add_special_tokens=False), fresh_hf),
        },
    }
    try:
        import tiktoken
        from tiktoken_ext.openai_public import r50k_pat_str

        if ranks is not None:
            from tiktoken.load import load_tiktoken_bpe

            enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=load_tiktoken_bpe(str(ranks)),
                                    special_tokens={"<|endoftext|>": 50256})
            identical = identical and enc.encode_ordinary(text) == ids["pure"]
            runs["one string"]["tiktoken"] = (lambda: enc.encode_ordinary(text), lambda: None)
            runs["lines"]["tiktoken"] = (lambda: [enc.encode_ordinary(line) for line in lines], lambda: None)
    except ImportError:
        pass

    for workload, paths in runs.items():
        workloads[workload] = {}
        for name, (fn, before) in paths.items():
            seconds = median_time(fn, args.repeats, before)
            workloads[workload][name] = seconds
    print(f"vocabulary: {vocab_name}; ids identical on every path: {identical}")
    print(f"{'workload':<12} {'path':<10} {'seconds':>8} {'MB/s':>7} {'vs tokenizers':>14}")
    for workload, times in workloads.items():
        for name, seconds in times.items():
            print(f"{workload:<12} {name:<10} {seconds:8.3f} {size_mb / seconds:7.2f} {seconds / times['hf']:13.2f}x")

    ratio = {w: t["pure"] / t["hf"] for w, t in workloads.items()}
    worst = max(ratio, key=ratio.get)  # type: ignore[arg-type]
    fast_ratio = {w: t["fast"] / t["hf"] for w, t in workloads.items()}
    result = {
        "encode_ratio_pure_vs_hf": round(ratio[worst], 3),
        "encode_ratio_fast_vs_hf": round(fast_ratio[worst], 3),
        "bpe_train_seconds": round(ours_train, 3),
        "hf_bpe_train_seconds": round(hf_train, 3),
        "bpe_train_ratio_vs_hf": round(ours_train / hf_train, 3),
        "ratio_workload": worst,
        "encode_ratio_pure_vs_hf_by_workload": {w: round(r, 3) for w, r in ratio.items()},
        "encode_ratio_fast_vs_hf_by_workload": {w: round(r, 3) for w, r in fast_ratio.items()},
        "encode_mb_per_s": {w: {name: round(size_mb / s, 3) for name, s in t.items()} for w, t in workloads.items()},
        "encode_seconds": {w: {name: round(s, 4) for name, s in t.items()} for w, t in workloads.items()},
        "ids_identical": identical,
        "goals": {"encode_ratio_pure_vs_hf_at_most": ENCODE_GOAL, "bpe_train_seconds_under": TRAIN_GOAL_S,
                  "encode_met": ratio[worst] <= ENCODE_GOAL, "train_met": ours_train < TRAIN_GOAL_S},
        "text": {"source": source, "megabytes": round(size_mb, 4), "lines": len(lines)},
        "vocabulary": vocab_name,
        "threads": "single-threaded (RAYON_NUM_THREADS=1; tiktoken one call per line)",
        "repeats": args.repeats,
        "machine": describe(),
    }
    print(f"encode_ratio_pure_vs_hf = {result['encode_ratio_pure_vs_hf']} ({worst}), "
          f"encode_ratio_fast_vs_hf = {result['encode_ratio_fast_vs_hf']}, bpe_train_seconds = {result['bpe_train_seconds']}")
    write_text_atomic(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
