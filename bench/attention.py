"""Attention three ways: eager vs SDPA (torch's fused kernel, the anchor) vs glassformer's tiled flash.

Causal self-attention, batch 1, 8 heads, head dim 64, float32, at sequence lengths 128 ... 2048,
through ``glassformer.nn.attention.attention(..., backend=...)``. For each path we record:

* **time**: the median wall-clock time of ``--repeats`` calls after one warm-up call.
* **peak memory**: the largest amount of memory the call had allocated at any one moment, over
  and above what existed before it (the inputs q, k, v are allocated beforehand and not counted;
  the output is counted). On CPU there is no ``torch.cuda.max_memory_allocated``, and the
  process's resident size is useless here (the allocator keeps freed pages, other threads
  allocate), so we ask torch's own CPU allocator: with ``torch.profiler.profile(profile_memory=True)``
  every allocation and free made through c10's allocator is recorded with its size and time,
  including the scratch buffers that fused kernels allocate and free inside a single op. Summing
  those signed sizes in time order gives the live bytes at every instant; the peak of that sum is
  the number reported. (Memory taken outside torch's allocator, e.g. thread stacks, is not seen;
  it does not depend on sequence length.) On CUDA the script uses ``max_memory_allocated``.

The eager path forms the full ``(T, T)`` score and weight matrices, so its memory grows as T^2.
The tiled path keeps only ``(block, block)`` tiles plus the output, so its memory must grow
linearly with T. The script prints, per path, the marginal bytes per added token between
consecutive lengths (constant for linear growth, proportional to T for quadratic growth) and the
largest relative residual of a least-squares fit ``a + b*T``; the flash path passes when the fit is
within 10% and its marginal cost does not rise by more than 1.5x from the first interval to the last.

Run: ``.venv/bin/python bench/attention.py`` (about a minute on 2 CPU cores). Results go to
``bench/results/attention.json`` together with ``glassformer.utils.machine.describe()``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from glassformer.nn.attention import attention
from glassformer.utils.config import write_text_atomic
from glassformer.utils.machine import describe
from glassformer.utils.progress import track

METHODS = ("eager", "sdpa", "flash")
ANCHOR = "sdpa"
MiB = 2**20


def peak_bytes_cpu(fn: Callable[[], torch.Tensor]) -> int:
    """Peak of (bytes allocated - bytes freed) through torch's CPU allocator while ``fn`` runs."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
        del out  # freed after the peak; keeps the output counted in it
    sizes: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            sizes.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    live = peak = 0
    for _, size in sorted(sizes):
        live += size
        peak = max(peak, live)
    return peak


def peak_bytes_cuda(fn: Callable[[], torch.Tensor]) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    del out
    return torch.cuda.max_memory_allocated() - before


def median_ms(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, list[float]]:
    fn()  # warm-up: first-call dispatch and allocation costs are not what we measure
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), times


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares ``y = a + b*x``; returns (a, b, largest |residual| / y)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    worst = max(abs(y - (a + b * x)) / y for x, y in zip(xs, ys))
    return a, b, worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-size", type=int, default=128, help="tile size of the flash path")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 gives steadier numbers on a busy machine")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "attention.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak_bytes = peak_bytes_cuda if device.type == "cuda" else peak_bytes_cpu

    rows: list[dict] = []
    cases = [(t, m) for t in args.lengths for m in METHODS]
    inputs: dict[int, tuple[torch.Tensor, ...]] = {}
    reference: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for t, method in track(cases, desc="attention", unit="case"):
            if t not in inputs:
                g = torch.Generator(device=device).manual_seed(t)
                shape = (args.batch, args.heads, t, args.head_dim)
                inputs[t] = tuple(torch.randn(shape, generator=g, device=device) for _ in range(3))
            q, k, v = inputs[t]

            def call(method=method, q=q, k=k, v=v) -> torch.Tensor:
                return attention(q, k, v, is_causal=True, backend=method, block_size=args.block_size)[0]

            out = call()
            if method == "eager":
                reference[t] = out
            err = (out - reference[t]).abs().max().item()
            ms, all_ms = median_ms(call, args.repeats, device)
            peak = peak_bytes(call)
            rows.append(
                {"seq_len": t, "method": method, "median_ms": ms, "times_ms": all_ms, "peak_bytes": peak,
                 "max_abs_diff_vs_eager": err}
            )
            del out

    def get(t: int, m: str) -> dict:
        return next(r for r in rows if r["seq_len"] == t and r["method"] == m)

    print(f"\ncausal attention, batch {args.batch}, {args.heads} heads, head dim {args.head_dim}, float32, "
          f"{device.type}; time = median of {args.repeats}, memory = peak allocated by the call")
    head = (f"{'T':>5} | {'eager ms':>9} {'sdpa ms':>9} {'flash ms':>9} | {'eager/sdpa':>10} {'flash/sdpa':>10} | "
            f"{'eager MiB':>9} {'sdpa MiB':>9} {'flash MiB':>9} | {'eager/flash mem':>15}")
    print(head)
    print("-" * len(head))
    for t in args.lengths:
        e, s, f = get(t, "eager"), get(t, "sdpa"), get(t, "flash")
        print(
            f"{t:>5} | {e['median_ms']:9.2f} {s['median_ms']:9.2f} {f['median_ms']:9.2f} | "
            f"{e['median_ms'] / s['median_ms']:10.2f} {f['median_ms'] / s['median_ms']:10.2f} | "
            f"{e['peak_bytes'] / MiB:9.2f} {s['peak_bytes'] / MiB:9.2f} {f['peak_bytes'] / MiB:9.2f} | "
            f"{e['peak_bytes'] / max(f['peak_bytes'], 1):15.1f}"
        )
    worst_err = max(r["max_abs_diff_vs_eager"] for r in rows)
    print(f"largest |output - eager output| over all runs: {worst_err:.1e}")

    growth: dict[str, dict] = {}
    lengths = sorted(args.lengths)
    print("\nmemory growth with sequence length: peak bytes per token; marginal bytes per added token between "
          "consecutive lengths (constant = linear growth, rising = faster); a least-squares fit a + b*T")
    for method in METHODS:
        peaks = [get(t, method)["peak_bytes"] for t in lengths]
        a, b, worst = linear_fit([float(t) for t in lengths], [float(p) for p in peaks])
        marginal = [(p1 - p0) / (t1 - t0) for t0, t1, p0, p1 in zip(lengths, lengths[1:], peaks, peaks[1:])]
        growth[method] = {
            "peak_bytes": dict(zip(lengths, peaks)),
            "bytes_per_token": {t: p / t for t, p in zip(lengths, peaks)},
            "marginal_bytes_per_added_token": dict(zip([f"{t0}-{t1}" for t0, t1 in zip(lengths, lengths[1:])], marginal)),
            "marginal_growth_last_over_first": marginal[-1] / marginal[0] if marginal and marginal[0] else None,
            "linear_fit_intercept_bytes": a,
            "linear_fit_slope_bytes_per_token": b,
            "linear_fit_max_relative_residual": worst,
        }
        print(f"{method:>6}: per token " + " ".join(f"{p / t / 1024:6.1f}" for t, p in zip(lengths, peaks))
              + " KiB | marginal " + " ".join(f"{m / 1024:6.1f}" for m in marginal)
              + f" KiB | fit residual {worst:7.1%}")
    flash = growth["flash"]
    ratio = flash["marginal_growth_last_over_first"]
    linear = flash["linear_fit_max_relative_residual"] < 0.10 and ratio is not None and ratio < 1.5
    print(f"tiled flash memory grows linearly with T: {'yes' if linear else 'NO'} (fit residual "
          f"{flash['linear_fit_max_relative_residual']:.1%} < 10%; marginal bytes per token change by x{ratio:.2f} "
          f"from the first to the last interval, < 1.5; eager's change by "
          f"x{growth['eager']['marginal_growth_last_over_first']:.2f})")

    result = {
        "benchmark": "attention",
        "description": "causal self-attention: eager vs SDPA (anchor) vs glassformer's tiled flash path",
        "machine": describe(),
        "settings": {"batch": args.batch, "heads": args.heads, "head_dim": args.head_dim, "dtype": "float32",
                     "causal": True, "repeats": args.repeats, "flash_block_size": args.block_size,
                     "device": device.type, "anchor": ANCHOR,
                     "memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda"
                     else "torch.profiler allocation events of the CPU allocator (peak live bytes)"},
        "results": rows,
        "memory_growth": growth,
        "flash_memory_linear": linear,
    }
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")
    return 0 if linear else 1


if __name__ == "__main__":
    raise SystemExit(main())
