"""Lesson 02: multi-head attention, and sharing keys and values between heads (GQA, MQA).

Run:  python lessons/02_multi_head.py [--out DIR] [--quick]

One attention head produces one weighting per query: it can look for one kind of thing at a time.
Multi-head attention runs ``H`` small heads side by side, each in its own ``d_model / H``-dimensional
slice of the projections, then mixes their outputs with one more matrix (the output projection).
The cost is the same as one big head; what changes is that every head gets its own weights, so one
can track the previous token while another follows the subject of the sentence.

Serving a model keeps every past key and value in a *KV cache*, and with many heads that cache
dominates memory. Grouped-query attention (GQA) lets groups of query heads share one key/value
head; multi-query attention (MQA) is the extreme of a single shared key/value head.

This lesson splits ``glassformer.nn.attention.MultiHeadAttention``'s computation into its steps by
hand, draws every head, and checks each variant against the module.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from _lesson import check, parse_args, save, section, show
from torch import nn

from glassformer.nn.attention import MultiHeadAttention
from glassformer.viz.attention import plot_attention_heads

args = parse_args("02", __doc__)
torch.manual_seed(0)

tokens = "the animal didn't cross the street because it was tired".split()
T, d_model, n_heads = len(tokens), 16, 4
d_head = d_model // n_heads
x = torch.randn(1, T, d_model)  # (B, T, C): one sentence of random "embeddings"


def sharpen(module: nn.Module, std: float = 0.6) -> None:
    """Random weights larger than the usual init, so each head's pattern is visible (a trained model's
    heads are sharp; freshly initialised ones attend almost uniformly)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


# ---------------------------------------------------------------------------------------------
section("1. The module we will take apart")
mha = MultiHeadAttention(d_model, n_heads, backend="eager")
sharpen(mha)
for name, p in mha.named_parameters():
    print(f"{name:16s} {tuple(p.shape)}")
# nn.Linear stores its weight as (out_features, in_features) and computes x @ W.T + b.

# ---------------------------------------------------------------------------------------------
section("2. Project, then split the width into heads")
# One matrix multiply projects all heads at once; the split is only a reshape: features
# [h*d_head, (h+1)*d_head) belong to head h. The transpose puts heads next to the batch so that
# every head's attention is one batched matrix product.
q = x @ mha.q_proj.weight.T + mha.q_proj.bias  # (B, T, C)
k = x @ mha.k_proj.weight.T + mha.k_proj.bias
v = x @ mha.v_proj.weight.T + mha.v_proj.bias


def split(t: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.view(b, n, heads, c // heads).transpose(1, 2)  # (B, heads, T, d_head)


qh, kh, vh = split(q, n_heads), split(k, n_heads), split(v, n_heads)
print(f"q {tuple(q.shape)} -> per head {tuple(qh.shape)} = (batch, heads, tokens, d_head)")

# ---------------------------------------------------------------------------------------------
section("3. Every head attends on its own")
scores = qh @ kh.transpose(-2, -1) / math.sqrt(d_head)  # (B, H, T, T)
weights = torch.softmax(scores, dim=-1)
heads_out = weights @ vh  # (B, H, T, d_head)
for h in range(n_heads):
    top = weights[0, h].argmax(-1)
    print(f"head {h}: each token's favourite key: " + ", ".join(
        f"{tokens[i]}->{tokens[j]}" for i, j in enumerate(top.tolist())))

# ---------------------------------------------------------------------------------------------
section("4. Concatenate the heads and mix them with the output projection")
# Concatenation is the inverse reshape. The output projection is where the heads' findings are
# combined: without it each head's output would stay in its own slice of the width.
concat = heads_out.transpose(1, 2).reshape(1, T, d_model)  # (B, T, C)
out = concat @ mha.o_proj.weight.T + mha.o_proj.bias
show("output, first three tokens", out[0, :3])

section("5. Check against MultiHeadAttention")
lib_out, lib_weights = mha(x, return_weights=True)
check("per-head weights", weights, lib_weights)
check("output", out, lib_out, atol=1e-5)

path = plot_attention_heads([weights], tokens, args.out / "heads.png", title="4 heads, one layer (random weights)")
print(f"saved {path}")

# ---------------------------------------------------------------------------------------------
section("6. Grouped-query and multi-query attention")
# With n_kv_heads < n_heads the key and value projections are smaller: n_kv_heads * d_head wide.
# Query head h reads key/value head h // (n_heads // n_kv_heads). In code that is a repeat of
# each key/value head along the head axis before the usual attention.
for n_kv, name in ((2, "GQA"), (1, "MQA")):
    module = MultiHeadAttention(d_model, n_heads, n_kv_heads=n_kv, backend="eager")
    sharpen(module)
    group = n_heads // n_kv
    q = split(x @ module.q_proj.weight.T + module.q_proj.bias, n_heads)  # (B, 4, T, d_head)
    k = split(x @ module.k_proj.weight.T + module.k_proj.bias, n_kv)  # (B, n_kv, T, d_head)
    v = split(x @ module.v_proj.weight.T + module.v_proj.bias, n_kv)
    k = k.repeat_interleave(group, dim=1)  # (B, 4, T, d_head): heads 0,1 share kv head 0, ...
    v = v.repeat_interleave(group, dim=1)
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d_head), dim=-1)
    o = (w @ v).transpose(1, 2).reshape(1, T, d_model) @ module.o_proj.weight.T + module.o_proj.bias
    print(f"\n{name}: {n_heads} query heads, {n_kv} key/value head(s); k_proj weight "
          f"{tuple(module.k_proj.weight.shape)} instead of {(d_model, d_model)}")
    lib_o, lib_w = module(x, return_weights=True)
    check(f"{name} weights", w, lib_w)
    check(f"{name} output", o, lib_o, atol=1e-5)
    title = f"{name}: heads sharing a key/value head differ only by their queries"
    print(f"saved {plot_attention_heads([w], tokens, args.out / f'{name.lower()}_heads.png', title=title)}")

# ---------------------------------------------------------------------------------------------
section("7. What sharing buys: the KV cache")
# Generating token by token, a model keeps the keys and values of every past token in every layer.
# Per token that is 2 (k and v) * layers * n_kv_heads * d_head numbers. SmolLM2-135M's shape
# (30 layers, 9 query heads of 64 dims) makes the point; it ships with 3 key/value heads.
layers, heads, head_dim, bytes_per = 30, 9, 64, 2  # bfloat16
context = 2048 if args.quick else 8192
rows = []
for kv, label in ((9, "MHA (9 kv heads)"), (3, "GQA (3 kv heads)"), (1, "MQA (1 kv head)")):
    per_token = 2 * layers * kv * head_dim * bytes_per
    rows.append((label, per_token, per_token * context / 2**20))
    print(f"{label:18s} {per_token / 1024:6.1f} KiB per token, {rows[-1][2]:7.1f} MiB for {context} tokens")
fig, ax = plt.subplots(figsize=(6, 3))
ax.barh([r[0] for r in rows], [r[2] for r in rows], color=["#1f77b4", "#2ca02c", "#ff7f0e"])
ax.set_xlabel(f"KV cache for {context} tokens, one sequence (MiB, bfloat16)")
ax.set_title("SmolLM2-135M's shape with different key/value head counts")
ax.invert_yaxis()
save(fig, args.out, "kv_cache.png")
print(f"\nLesson 02 done; figures in {args.out}")
