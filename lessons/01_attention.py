"""Lesson 01: scaled dot-product attention, by hand, on six tokens.

Run:  python lessons/01_attention.py [--out DIR] [--quick]

Attention is how a transformer moves information between positions. Every position asks a
question (its *query*), every position advertises what it holds (its *key*), and every position
offers some content (its *value*). A position's output is an average of all the values, weighted by
how well its query matches each key:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d)) V

This lesson computes that formula one step at a time on a six-token sentence, shows why the
``sqrt(d)`` is there, adds the causal mask that a language model needs, draws the attention
weights, and ends by checking every number against ``glassformer.nn.attention.attention``.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from _lesson import check, heatmap, parse_args, save, section, show

from glassformer.nn.attention import attention

args = parse_args("01", __doc__)
torch.manual_seed(0)

# ---------------------------------------------------------------------------------------------
section("1. Tokens become vectors")
# A real model looks each token up in a learned embedding table. Random vectors are enough to
# watch the mechanics; the same word gets the same vector, as it would from a table.
tokens = ["the", "cat", "sat", "on", "the", "mat"]
d_model, d_head = 8, 4
vocab = {word: i for i, word in enumerate(dict.fromkeys(tokens))}
table = torch.randn(len(vocab), d_model)
x = table[[vocab[w] for w in tokens]]  # (T, d_model)
show("x: one row per token", x)

# ---------------------------------------------------------------------------------------------
section("2. Queries, keys and values are three linear views of the same vectors")
# Three learned matrices turn each token vector into a query, a key and a value. Separate
# matrices let a token look for one thing (query) while being found for another (key).
W_q, W_k, W_v = (torch.randn(d_model, d_head) / math.sqrt(d_model) * 2 for _ in range(3))
q, k, v = x @ W_q, x @ W_k, x @ W_v  # each (T, d_head)
print(f"q, k, v: each {tuple(q.shape)} = (tokens, head dimension)")

# ---------------------------------------------------------------------------------------------
section("3. Scores: every query against every key")
# Row i of the score matrix holds query i's dot products with all keys: a big dot product means
# "this key is what I am looking for". Note the two "the" columns: same token, same key, so every
# query scores them identically. Nothing here knows *where* a token is; lesson 03 fixes that.
scores = q @ k.T  # (T, T)
scale = 1 / math.sqrt(d_head)
scaled = scores * scale
show("scores / sqrt(d): row = query token, column = key token", scaled)

# Why divide by sqrt(d)? If the entries of q and k have unit variance, q . k is a sum of d such
# products, so its standard deviation grows like sqrt(d). Large scores push the softmax into a
# near one-hot regime where its gradient vanishes. Dividing by sqrt(d) keeps the spread at 1.
section("   ... why sqrt(d): the spread of dot products grows with the dimension")
dims = [4, 16, 64, 256] if args.quick else [4, 8, 16, 32, 64, 128, 256, 512, 1024]
trials = 200 if args.quick else 2000
std_raw, peak_raw, peak_scaled = [], [], []
for d in dims:
    qs, ks = torch.randn(trials, 16, d), torch.randn(trials, 16, d)  # 16 keys per query
    dots = (qs[:, :1] * ks).sum(-1)  # (trials, 16): one query against 16 keys
    std_raw.append(dots.std().item())
    peak_raw.append(torch.softmax(dots, -1).max(-1).values.mean().item())
    peak_scaled.append(torch.softmax(dots / math.sqrt(d), -1).max(-1).values.mean().item())
    print(f"d={d:5d}: std(q.k) = {std_raw[-1]:6.2f} (sqrt(d) = {math.sqrt(d):6.2f}); "
          f"largest softmax weight: unscaled {peak_raw[-1]:.2f}, scaled {peak_scaled[-1]:.2f}")
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.loglog(dims, std_raw, "o-", label="std of q.k")
ax1.loglog(dims, [math.sqrt(d) for d in dims], "--", label="sqrt(d)")
ax1.set_xlabel("head dimension d")
ax1.set_title("dot products spread out as d grows")
ax1.legend()
ax2.semilogx(dims, peak_raw, "o-", label="softmax(q.k)")
ax2.semilogx(dims, peak_scaled, "o-", label="softmax(q.k / sqrt(d))")
ax2.axhline(1 / 16, color="gray", ls=":", label="uniform over 16 keys")
ax2.set_xlabel("head dimension d")
ax2.set_title("mean largest attention weight")
ax2.legend()
save(fig, args.out, "scaling.png")

# ---------------------------------------------------------------------------------------------
section("4. Softmax turns each row of scores into weights that sum to 1")
# Subtracting the row maximum first changes nothing (it cancels in the ratio) but keeps exp()
# from overflowing: the largest exponent is exp(0) = 1.
shifted = scaled - scaled.max(dim=-1, keepdim=True).values
exp = shifted.exp()
weights = exp / exp.sum(dim=-1, keepdim=True)  # (T, T)
show("attention weights (rows sum to 1)", weights)
print("row sums:", [round(s, 6) for s in weights.sum(-1).tolist()])

fig, ax = plt.subplots(figsize=(5, 4.2))
heatmap(ax, weights, tokens, tokens, "attention weights\nrow: query (who looks), column: key (looked at)")
ax.set_xlabel("key")
ax.set_ylabel("query")
save(fig, args.out, "attention_weights.png")

# ---------------------------------------------------------------------------------------------
section("5. The output: a weighted average of the values")
# Each output row mixes the value vectors with that row's weights. With weights near uniform the
# outputs would all look alike; a trained model learns sharp, purposeful weights.
out = weights @ v  # (T, d_head)
show("output = weights @ v", out)

# ---------------------------------------------------------------------------------------------
section("6. The causal mask: no peeking at the future")
# A language model predicts token t+1 from tokens 0..t, and trains on all positions at once. If
# position t could attend to t+1 it would simply copy the answer. The causal mask sets the scores
# of future keys to -inf *before* the softmax, so their weight is exactly exp(-inf) = 0 and the
# remaining weights of each row still sum to 1. (glassformer uses the most negative finite number
# instead of -inf, so that a row with every key masked, a padding query, gives no NaN.)
T = len(tokens)
future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True above the diagonal
masked = scaled.masked_fill(future, float("-inf"))
causal_weights = torch.softmax(masked, dim=-1)
causal_out = causal_weights @ v
show("causal weights", causal_weights)
print("the first token can only attend to itself:", causal_weights[0].tolist())

fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), layout="constrained")
heatmap(axes[0], (~future).float(), tokens, tokens, "causal mask (1 = may attend)", cmap="Blues", vmin=0, vmax=1.5)
heatmap(axes[1], masked, tokens, tokens, "scores with future set to -inf", cmap="magma")
heatmap(axes[2], causal_weights, tokens, tokens, "causal attention weights")
for ax in axes:
    ax.set_xlabel("key")
    ax.set_ylabel("query")
save(fig, args.out, "causal_attention.png")

# ---------------------------------------------------------------------------------------------
section("7. Check: the hand computation equals glassformer.nn.attention.attention")
# The library takes (batch, heads, tokens, head_dim) tensors; we have one batch row and one head.
q4, k4, v4 = (t[None, None] for t in (q, k, v))  # (1, 1, T, d_head)
lib_out, lib_weights = attention(q4, k4, v4, backend="eager", return_weights=True)
check("weights, no mask", weights, lib_weights[0, 0])
check("output, no mask", out, lib_out[0, 0])
lib_out, lib_weights = attention(q4, k4, v4, is_causal=True, backend="eager", return_weights=True)
check("weights, causal", causal_weights, lib_weights[0, 0])
check("output, causal", causal_out, lib_out[0, 0])
# The fast paths never form the weights, yet give the same outputs: PyTorch's fused kernel, and
# glassformer's tiled "flash" path, which here walks over the keys two at a time with an online
# softmax.
sdpa_out, _ = attention(q4, k4, v4, is_causal=True, backend="sdpa")
check("output, causal, sdpa path", causal_out, sdpa_out[0, 0])
flash_out, _ = attention(q4, k4, v4, is_causal=True, backend="flash", block_size=2)
check("output, causal, tiled flash path", causal_out, flash_out[0, 0])
print(f"\nLesson 01 done; figures in {args.out}")
