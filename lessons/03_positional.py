"""Lesson 03: where am I? Positional information: sinusoidal, learned, RoPE and ALiBi.

Run:  python lessons/03_positional.py [--out DIR] [--quick]

Attention compares every query with every key and averages the values: nothing in that formula
knows the order of the tokens. Shuffle the input and the outputs are shuffled the same way, so
"dog bites man" and "man bites dog" look alike to every token. Transformers therefore inject
position in one of two ways:

* **absolute**: add a vector that depends on the position to each token embedding, either a fixed
  sinusoidal pattern (the 2017 Transformer) or a learned table (GPT-2, BERT);
* **relative**: act inside attention so that the score of query ``m`` and key ``n`` depends on the
  offset ``m - n``: RoPE rotates queries and keys (Llama, most recent models), ALiBi subtracts a
  penalty growing with distance (BLOOM, MPT).

Each part below builds the encoding from its formula, checks it against ``glassformer.nn.positional``
and draws it.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from _lesson import check, parse_args, save, section

from glassformer.nn.attention import MultiHeadAttention, attention
from glassformer.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    sinusoidal_table,
)

args = parse_args("03", __doc__)
torch.manual_seed(0)

# ---------------------------------------------------------------------------------------------
section("1. Attention alone ignores order")
mha = MultiHeadAttention(16, 4, backend="eager")
x = torch.randn(1, 6, 16)
perm = torch.tensor([3, 0, 5, 1, 4, 2])
with torch.no_grad():
    out = mha(x)[0]
    out_shuffled_input = mha(x[:, perm])[0]
# Shuffling the input only shuffles the output: each token's result is unchanged.
check("attention(shuffled x) == shuffled attention(x)", out_shuffled_input, out[:, perm], atol=1e-6)

# ---------------------------------------------------------------------------------------------
section("2. Sinusoidal encoding (Vaswani et al. 2017)")
# PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)).
# Each pair of dimensions is a clock turning at its own speed, from one turn every 2*pi positions
# (i = 0) down to one every 2*pi*10000 positions. Fast clocks tell neighbours apart, slow ones tell
# the beginning from the end.
max_len, dim = (64, 32) if args.quick else (128, 64)
p = torch.arange(max_len, dtype=torch.float64)[:, None]
freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
table = torch.zeros(max_len, dim, dtype=torch.float64)
table[:, 0::2] = torch.sin(p * freq)
table[:, 1::2] = torch.cos(p * freq)
check("sinusoidal_table matches the formula", sinusoidal_table(max_len, dim), table, atol=1e-6)
emb = torch.randn(2, 10, dim)
check("SinusoidalPositionalEncoding adds the table", SinusoidalPositionalEncoding(dim, max_len)(emb),
      emb + table[:10].float(), atol=1e-6)

# Why sin *and* cos: for any offset k, PE[p + k] is a fixed rotation of PE[p] in each (sin, cos)
# pair, the same rotation for every p. A linear layer can therefore learn "look k tokens back".
k = 5
c, s = torch.cos(k * freq), torch.sin(k * freq)
sin_p, cos_p = table[:-k, 0::2], table[:-k, 1::2]
rotated = torch.stack([sin_p * c + cos_p * s, cos_p * c - sin_p * s], dim=-1).flatten(1)
check(f"PE[p + {k}] is a rotation of PE[p] (same for every p)", rotated, table[k:], atol=1e-9)

fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
im = axes[0].imshow(table.T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
axes[0].set(xlabel="position", ylabel="dimension", title="sinusoidal table (dimension x position)")
plt.colorbar(im, ax=axes[0])
for i in (0, dim // 8, dim // 4, dim // 2):
    axes[1].plot(table[:, i], label=f"dim {i}")
axes[1].set(xlabel="position", title="each dimension is a wave of its own frequency")
axes[1].legend()
similarity = table @ table.T  # (P, P): how alike two positions' codes are
im = axes[2].imshow(similarity, cmap="viridis")
axes[2].set(xlabel="position", ylabel="position", title="PE[p] . PE[q]: depends only on |p - q|")
plt.colorbar(im, ax=axes[2])
save(fig, args.out, "sinusoidal.png")

# ---------------------------------------------------------------------------------------------
section("3. Learned absolute positions (GPT-2, BERT)")
# Just a trainable table with one row per position, added to the token embeddings. Simple and
# flexible, but it has nothing to say about positions beyond its last row.
learned = LearnedPositionalEmbedding(max_len=16, dim=8)
positions = torch.arange(10)
check("LearnedPositionalEmbedding is a table lookup", learned(positions), learned.weight[:10], atol=0)
try:
    learned(torch.arange(20))
except ValueError as err:
    print(f"position 19 of a 16-row table -> ValueError: {err}")

# ---------------------------------------------------------------------------------------------
section("4. RoPE: rotary position embedding (Su et al. 2021)")
# Split each query and key into pairs of features and rotate pair i by the angle pos * theta_i.
# A rotation by a and then the dot product with something rotated by b only sees b - a:
#     (R(m) q) . (R(n) k) = q . R(n - m) k
# so the attention score depends on the relative offset, and no vector is added to the embeddings.
# glassformer uses the "rotate half" layout of GPT-NeoX/Llama: feature i pairs with i + d/2.
head_dim = 16
theta = 10000.0 ** (-torch.arange(0, head_dim, 2).float() / head_dim)  # (d/2,)


def rope_by_hand(v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotate each (v[i], v[i + d/2]) pair of the last axis by pos * theta_i."""
    half = v.shape[-1] // 2
    angle = pos[:, None].float() * theta  # (T, d/2)
    a, b = v[..., :half], v[..., half:]
    return torch.cat([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], dim=-1)


T = 24 if args.quick else 48
q = torch.randn(1, 1, T, head_dim)
kk = torch.randn(1, 1, T, head_dim)
rope = RotaryEmbedding(head_dim)
cos, sin = rope.cos_sin(torch.arange(T))
q_lib, k_lib = apply_rotary(q, kk, cos, sin)
check("RoPE by hand == RotaryEmbedding + apply_rotary (queries)", rope_by_hand(q, torch.arange(T)), q_lib, atol=1e-5)
check("RoPE by hand == RotaryEmbedding + apply_rotary (keys)", rope_by_hand(kk, torch.arange(T)), k_lib, atol=1e-5)

# The picture: put the *same* query vector at every position m and the *same* key vector at every
# position n, rotate them, and record the score. It is constant along each diagonal (same m - n).
one_q = q[0, 0, 0].expand(T, head_dim)
one_k = kk[0, 0, 0].expand(T, head_dim)
scores = rope_by_hand(one_q, torch.arange(T)) @ rope_by_hand(one_k, torch.arange(T)).T  # (T, T)
diagonals = [torch.diagonal(scores, offset=o) for o in range(-T + 1, T)]
spread = max((d.max() - d.min()).item() for d in diagonals)
check("RoPE score is constant along each diagonal (depends on m - n only)", torch.tensor(spread), torch.tensor(0.0), atol=1e-4)
# Shifting both positions by 100 (e.g. continuing after a cached prefix) changes nothing:
far = rope_by_hand(one_q[:1], torch.tensor([110])) @ rope_by_hand(one_k[:1], torch.tensor([100])).T
check("score(q at 110, k at 100) == score(q at 10, k at 0)", far[0, 0], scores[10, 0], atol=1e-4)

same = torch.randn(head_dim)  # a query and key that agree: how does the score fade with distance?
offsets = torch.arange(0, 4 * T)
decay = (rope_by_hand(same.expand(len(offsets), head_dim), offsets) @ same) / same.dot(same)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
im = axes[0].imshow(scores, cmap="RdBu")
axes[0].set(xlabel="key position n", ylabel="query position m", title="RoPE: score of fixed q, k placed at (m, n)")
plt.colorbar(im, ax=axes[0])
axes[1].plot(offsets, decay)
axes[1].set(xlabel="offset m - n", ylabel="cosine similarity", title="q = k rotated apart by the offset")
axes[1].axhline(0, color="gray", lw=0.5)
save(fig, args.out, "rope_similarity.png")

# ---------------------------------------------------------------------------------------------
section("5. ALiBi: attention with linear biases (Press et al. 2022)")
# No embedding at all: each head subtracts slope_h * distance from its scores. Heads with large
# slopes look only at close neighbours, heads with small slopes see far. The slopes are the
# geometric sequence 2^(-8/H), 2^(-16/H), ..., 2^(-8); for a head count that is not a power of two
# the paper takes the closest smaller power of two and fills up with every other slope of the next.
n_heads = 8
by_formula = torch.tensor([2 ** (-8 * (h + 1) / n_heads) for h in range(n_heads)])
check("alibi_slopes(8) == 2^(-8(h+1)/8)", alibi_slopes(8), by_formula, atol=1e-7)
six = [2 ** (-8 * (h + 1) / 4) for h in range(4)] + [2 ** (-8 * (h + 1) / 8) for h in range(8)][0::2][:2]
check("alibi_slopes(6): 4 power-of-two slopes + 2 from the 8-head sequence", alibi_slopes(6), torch.tensor(six), atol=1e-7)

T = 10 if args.quick else 16
bias = alibi_bias(alibi_slopes(n_heads), T, T)  # (1, H, T, T), causal form: -(m - n) * slope
fig, axes = plt.subplots(2, 4, figsize=(13, 6.6), layout="constrained")
future = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
lowest = bias.min().item()  # one colour scale for all heads, so the slopes can be compared
for h, ax in enumerate(axes.flat):
    shown = bias[0, h].masked_fill(future, float("nan"))  # future keys are masked anyway
    im = ax.imshow(shown, cmap="magma", vmin=lowest, vmax=0)
    ax.set(title=f"head {h}: slope {alibi_slopes(n_heads)[h]:.4f}", xlabel="key", ylabel="query")
    ax.set_xticks(range(0, T, 5))
    ax.set_yticks(range(0, T, 5))
fig.colorbar(im, ax=axes, shrink=0.8, label="bias added to the score")
fig.suptitle("ALiBi bias added to the scores (causal): steep heads look near, gentle heads look far")
save(fig, args.out, "alibi_bias.png")

# With equal raw scores the bias alone decides: the steepest head attends to the last few tokens.
q0 = torch.zeros(1, n_heads, T, 4)
_, w = attention(q0, q0, q0, bias=bias, is_causal=True, backend="eager", return_weights=True)
print("last query's weights on the previous 4 keys, steepest head:", [round(v, 3) for v in w[0, 0, -1, -4:].tolist()])
print("... and the gentlest head:                                 ", [round(v, 3) for v in w[0, -1, -1, -4:].tolist()])
print(f"\nLesson 03 done; figures in {args.out}")
