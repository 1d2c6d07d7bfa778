"""Lesson 14: why generating a token costs a read of the whole model, and how to read less of it.

Run:  python lessons/14_decoding_speed.py [--out DIR] [--quick]

A language model generates one token per forward pass. With a KV cache, that pass sees a single
new position: every linear layer multiplies its weight matrix by one vector. Each weight is read
from memory and used for exactly one multiply-add, so the speed limit is not arithmetic but
memory bandwidth: tokens per second <= bytes per second / bytes of weights.

This lesson
1. writes greedy decoding with a KV cache by hand and checks it against ``glassformer.generate``;
2. measures how a matrix-vector product is bound by memory (and a matrix-matrix one is not);
3. packs a weight into the tile layout ``glassformer.kernels`` streams, and computes with it;
4. builds the exact greedy "shortlist" head: score the vocabulary with int8 weights, bound the
   error, and recompute only the tokens that can still win (``glassformer.generate.shortlist``).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, parse_args, save, section

from glassformer.generate import generate
from glassformer.generate.shortlist import ShortlistHead
from glassformer.kernels import available, pack_weight, packed_linear
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import GPTConfig

args = parse_args("14", __doc__)
torch.manual_seed(0)
torch.set_num_threads(1)  # one core: the figures then show one core's memory bandwidth

# ---------------------------------------------------------------------------------------------
section("1. Greedy decoding with a KV cache, by hand")
config = GPTConfig(vocab_size=512, max_seq_len=64, n_layers=2, n_heads=4, dim=64, init_std=0.3)
model = GPT(config).eval()
prompt = torch.tensor([[5, 17, 300, 4, 99]])  # (B, T)
n_new = 12

with torch.no_grad():
    cache = model.new_cache(batch_size=1, max_len=prompt.shape[1] + n_new, kind="static")
    logits = model(prompt, cache=cache).logits[:, -1]  # the prompt once: (B, V) for the next token
    by_hand = []
    for _ in range(n_new):
        token = logits.argmax(-1, keepdim=True)  # (B, 1) greedy choice
        by_hand.append(int(token))
        # only the new token goes in: its keys and values join the cache, its query reads them all
        logits = model(token, cache=cache).logits[:, -1]
print("tokens by hand:", by_hand)
library = generate(model, prompt, max_new_tokens=n_new).tokens[0]
check("greedy tokens, hand loop vs glassformer.generate", torch.tensor(by_hand), torch.tensor(library), atol=0)
with torch.no_grad():  # and the cache changes nothing: the last step's logits from scratch
    full = model(torch.tensor([prompt[0].tolist() + by_hand[:-1]])).logits[:, -1]
    cached_again = model.new_cache(1, 64, kind="static")
    model(prompt, cache=cached_again)
    for t in by_hand[:-1]:
        last = model(torch.tensor([[t]]), cache=cached_again).logits[:, -1]
check("logits with the cache == logits recomputed from scratch", last, full, atol=1e-4)

# ---------------------------------------------------------------------------------------------
section("2. One row is bound by memory, many rows by arithmetic")
# A (O, I) float32 weight is 4*O*I bytes; multiplying it by M rows costs 2*M*O*I flops. With
# M = 1 there are 0.5 flops per byte: the cores wait for memory. With M = 256 there are 128 per
# byte and the cores are busy. The weights here are larger than any cache, as in a real model.
dim = 1024 if args.quick else 2048
weights = [torch.randn(4 * dim, dim) * 0.02 for _ in range(4 if args.quick else 8)]  # 64-256 MB
nbytes = sum(w.numel() * 4 for w in weights)


def best_seconds(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


rows = [1, 2, 4, 8, 16, 64, 256]
gbps, gflops = [], []
for m in rows:
    x = torch.randn(m, dim)
    seconds = best_seconds(lambda x=x: [F.linear(x, w) for w in weights])
    gbps.append(nbytes / seconds / 1e9)
    gflops.append(2 * m * nbytes / 4 / seconds / 1e9)
    print(f"M={m:4d} rows: {gbps[-1]:6.1f} GB/s of weights, {gflops[-1]:7.1f} GFLOP/s")
# glassformer's packed kernel (section 3) reads each weight once for up to 8 rows at a time, so
# it streams at memory speed for the few rows decoding has (a batch, beams, guessed tokens) until
# the arithmetic itself (2 flops per weight and row) takes longer than the read
packed = [pack_weight(w) for w in weights] if available() else []
kernel_rows, kernel_gbps = [m for m in rows if m <= 16], []
for m in kernel_rows if packed else []:
    x = torch.randn(m, dim)
    seconds = best_seconds(lambda x=x: [packed_linear(x, p, None, p.shape[0] * 32) for p in packed])
    kernel_gbps.append(nbytes / seconds / 1e9)
    print(f"packed kernel, M={m:2d} rows: {kernel_gbps[-1]:6.1f} GB/s of weights")
fig, ax1 = plt.subplots(figsize=(7, 4))
ax1.plot(rows, gbps, "o-", color="tab:blue", label="weights streamed (GB/s), F.linear")
if kernel_gbps:
    ax1.plot(kernel_rows, kernel_gbps, "o--", color="tab:cyan", label="weights streamed (GB/s), packed kernel")
ax1.set_xscale("log", base=2)
ax1.set_xlabel("rows multiplied at once (batch x new tokens)")
ax1.set_ylabel("GB/s")
ax2 = ax1.twinx()
ax2.plot(rows, gflops, "s-", color="tab:red", label="arithmetic (GFLOP/s)")
ax2.set_ylabel("GFLOP/s")
fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
ax1.set_title("decoding (1 row) waits on memory; prefill (many rows) on arithmetic")
save(fig, args.out, "memory_bound.png")
print("One new token per step reads every weight for 2 flops each: the step time is the weight bytes")
print("over the memory bandwidth, whatever the cores could compute.")

# ---------------------------------------------------------------------------------------------
section("3. The packed layout, by hand")
# nn.Linear keeps W as (out, in): row o is what output o reads. For one input row the kernel
# wants a single sequential stream, so it stores 32 output rows interleaved per input feature:
# P[t, i, r] = W[32 t + r, i]. Streaming P[t] front to back, output r of tile t accumulates
# x[i] * P[t, i, r]: 32 outputs at once, each weight read exactly once, in address order.
w = torch.randn(70, 48)  # 70 outputs: not a multiple of 32, the last tile is padded with zeros
tiles = -(-w.shape[0] // 32)
padded = torch.cat([w, torch.zeros(tiles * 32 - w.shape[0], w.shape[1])])
p_hand = padded.view(tiles, 32, w.shape[1]).transpose(1, 2).contiguous()  # (tiles, I, 32)
x = torch.randn(1, 48)
y_hand = torch.einsum("i,tir->tr", x[0], p_hand).reshape(-1)[: w.shape[0]]  # each tile: sum_i x_i P[t, i, :]
check("packed by hand, then multiplied == F.linear", y_hand, F.linear(x, w)[0], atol=1e-5)
if available():
    check("packed by hand == glassformer.kernels.pack_weight", p_hand, pack_weight(w), atol=0)
    check("the C kernel on the packed weight == F.linear", packed_linear(x, pack_weight(w), None, 70), F.linear(x, w),
          atol=1e-5)  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("4. Reading a quarter of the output head, and still the exact greedy token")
# GPT-2's output head is a third of its bytes. Greedy decoding needs its arg-max only. Store each
# row o as int8 q_o with one scale s_o (w_o ~ s_o q_o); the rounding error e_o = w_o - s_o q_o is
# small, and |w_o . h - s_o q_o . h| = |e_o . h| <= |e_o| |h| (Cauchy-Schwarz). A row whose score
# plus that bound is below the best score minus *its* bound cannot win: drop it. Recompute the
# few survivors in float32.
vocab, dim = (4000, 128) if args.quick else (50257, 768)
head = torch.randn(vocab, dim) * 0.02
h = F.layer_norm(torch.randn(dim), (dim,))  # a final hidden state
scale = head.abs().amax(dim=1) / 127  # (V,)
q = torch.round(head / scale[:, None])  # (V, C) integers in [-127, 127]
score = (q @ h) * scale  # what the int8 head says
bound = torch.linalg.vector_norm(head - q * scale[:, None], dim=1) * h.norm()  # |e_o| |h|
exact = head @ h
assert bool(((exact - score).abs() <= bound * 1.001 + 1e-5).all())  # float32 rounding aside
floor = (score - bound).max()  # the winner scores at least this
shortlist = torch.nonzero(score + bound >= floor).flatten()
print(f"{len(shortlist)} of {vocab} tokens survive; int8 reads {vocab * dim:,} bytes instead of {4 * vocab * dim:,}")
winner = shortlist[(head[shortlist] @ h).argmax()]
check("arg-max over the shortlist == arg-max of the full float32 head", winner, exact.argmax(), atol=0)
if available():
    library_logits = ShortlistHead(head)(h[None])[0]
    check("glassformer's ShortlistHead picks the same token", library_logits.argmax(), exact.argmax(), atol=0)

order = torch.argsort(exact, descending=True)[:60]
fig, ax = plt.subplots(figsize=(7, 4))
ax.errorbar(range(60), score[order], yerr=bound[order], fmt="o", ms=3, label="int8 score +- bound", alpha=0.7)
ax.plot(range(60), exact[order], "k.", ms=4, label="exact float32 logit")
ax.axhline(float(floor), color="tab:red", ls="--", label="best score - its bound")
ax.set_xlabel("tokens, best first (60 of the vocabulary)")
ax.set_ylabel("logit")
ax.set_title(f"{len(shortlist)} tokens reach the red line: only they are recomputed exactly")
ax.legend(fontsize=8)
save(fig, args.out, "shortlist.png")
