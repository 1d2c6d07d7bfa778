"""Lesson 04: the encoder block, by hand: attention, feed-forward, residuals and LayerNorm.

Run:  python lessons/04_encoder_block.py [--out DIR] [--quick]

A transformer is a stack of identical blocks. Each block has two sublayers:

1. **self-attention**, where tokens exchange information (lessons 01 and 02);
2. a **feed-forward network** (FFN), applied to every position on its own: widen to 4x the width,
   apply a non-linearity (GELU here), project back. This is where most parameters live.

Each sublayer sits inside a *residual connection* (its output is added to its input, so a block only
has to learn a correction, and gradients have a direct path down the stack) and next to a
*LayerNorm* (which keeps every token vector at a standard scale). Where the norm goes is the one
real design choice:

* **post-norm** (the 2017 Transformer, BERT): ``x = norm(x + sublayer(x))``
* **pre-norm** (GPT-2 and nearly every model since): ``x = x + sublayer(norm(x))``, with one extra
  norm at the very end of the stack.

This lesson builds a BERT-style encoder block by hand, with a padding mask, checks it against
``glassformer.nn.blocks.TransformerBlock`` in both norm positions, measures what the norm position
does to a deep stack, and ends with the same block in NumPy with its backward pass written by hand.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from _lesson import check, parse_args, save, section, show

from glassformer.nn.blocks import TransformerBlock, TransformerStack
from glassformer.nn.masks import build_attention_mask
from glassformer.numpy_ref import NumpyTransformerBlock
from glassformer.viz.attention import plot_attention_heads

args = parse_args("04", __doc__)
torch.manual_seed(0)

dim, n_heads, ffn_dim = 16, 4, 64
sentences = [
    "the animal didn't cross the street because tired".split(),
    "it was too tired to cross".split(),
]
T = max(len(s) for s in sentences)
# An encoder reads a batch of sentences of different lengths, padded to the longest one. The
# attention mask says which positions are real (1) and which are padding (0).
tokens = [s + ["[PAD]"] * (T - len(s)) for s in sentences]
attention_mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in sentences])
x = torch.randn(2, T, dim)  # stand-ins for token + position embeddings (lesson 03)
print("attention_mask:\n", attention_mask)

block = TransformerBlock(dim, n_heads, ffn_dim=ffn_dim, activation="gelu", norm_position="post", backend="eager")
with torch.no_grad():  # random norm scales and shifts too, so that the check below tests them
    for name, p in block.named_parameters():
        p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.3 * torch.randn_like(p))
W = {name: p.detach() for name, p in block.named_parameters()}  # shorthand for the hand version

# ---------------------------------------------------------------------------------------------
section("1. LayerNorm")
# Normalise each token vector to mean 0 and variance 1 over its features, then apply a learned
# per-feature scale and shift. Unlike BatchNorm it never mixes tokens or sentences, so it works
# the same in training, inference and at batch size one.


def layer_norm(h: torch.Tensor, prefix: str, eps: float = 1e-5) -> torch.Tensor:
    mean = h.mean(-1, keepdim=True)
    var = h.var(-1, keepdim=True, unbiased=False)
    return (h - mean) / torch.sqrt(var + eps) * W[f"{prefix}.weight"] + W[f"{prefix}.bias"]


normed = layer_norm(x, "attn_norm")
print(f"after LayerNorm (before the affine part) every token has mean 0, std 1; with it: "
      f"mean {normed.mean():.3f}, std {normed.std():.3f}")

# ---------------------------------------------------------------------------------------------
section("2. Self-attention with a padding mask")
# Padding positions must not be attended to: they carry no meaning, and a sentence's result must
# not depend on how much padding its batch needed. Only *keys* are masked; padding queries still
# compute something, which is ignored later (for instance by mean pooling with the mask).


def linear(h: torch.Tensor, name: str) -> torch.Tensor:
    return h @ W[f"{name}.weight"].T + W[f"{name}.bias"]


def self_attention(h: torch.Tensor, key_is_real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, t, c = h.shape
    d = c // n_heads
    q, k, v = (linear(h, f"attn.{p}_proj").view(b, t, n_heads, d).transpose(1, 2) for p in "qkv")
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (B, H, T, T)
    scores = scores.masked_fill(~key_is_real[:, None, None, :].bool(), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(b, t, c)
    return linear(mixed, "attn.o_proj"), weights


pad_keys = [i for i, m in enumerate(attention_mask[1].tolist()) if m == 0]
print(f"sentence 2 masks keys {pad_keys}: their scores become -inf, so their weights are exactly 0")

# ---------------------------------------------------------------------------------------------
section("3. The feed-forward network")
# GELU(z) = z * Phi(z), Phi the standard normal CDF: a smooth ReLU that lets a little negative
# signal through. BERT uses this exact (erf) form; GPT-2 a tanh approximation of it.


def ffn(h: torch.Tensor) -> torch.Tensor:
    z = linear(h, "ffn.up")  # (B, T, 4C): widen
    gelu = z * 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return linear(gelu, "ffn.down")  # (B, T, C): back to the width


z = torch.linspace(-3, 3, 7)
print("z      ", [f"{v:5.2f}" for v in z.tolist()])
print("GELU(z)", [f"{v:5.2f}" for v in (z * 0.5 * (1 + torch.erf(z / math.sqrt(2)))).tolist()])
print("ReLU(z)", [f"{v:5.2f}" for v in z.relu().tolist()])

# ---------------------------------------------------------------------------------------------
section("4. Post-norm block (BERT): x = norm(x + sublayer(x))")
attn_out, weights = self_attention(x, attention_mask)
h = layer_norm(x + attn_out, "attn_norm")
post_out = layer_norm(h + ffn(h), "ffn_norm")
show("block output, sentence 2, first token", post_out[1, 0])

mask = build_attention_mask(T, T, attention_mask=attention_mask)  # (B, 1, 1, T) bool, True = attend
lib = block(x, mask=mask, return_weights=True)
check("post-norm block == TransformerBlock(norm_position='post')", post_out, lib.hidden, atol=1e-5)
check("its attention weights", weights, lib.self_weights, atol=1e-6)
print("weight the padding keys receive, sentence 2:", weights[1, :, :, len(sentences[1]):].abs().max().item())

# Changing what sits in the padding changes nothing for the real tokens.
x_noisy_pad = x.clone()
x_noisy_pad[1, len(sentences[1]):] = 100 * torch.randn(T - len(sentences[1]), dim)
noisy = block(x_noisy_pad, mask=mask).hidden
n_real = len(sentences[1])
check("real tokens ignore the padding's content", noisy[1, :n_real], lib.hidden[1, :n_real], atol=1e-5)

heads_png = plot_attention_heads(
    [weights], tokens[1], args.out / "block_attention.png", batch_index=1,
    title="sentence 2: padding keys get no attention (random weights)",
)
print(f"saved {heads_png}")

# ---------------------------------------------------------------------------------------------
section("5. Pre-norm block (GPT-2 and later): x = x + sublayer(norm(x))")
# Same parameters, different wiring: the norm sits at the *entrance* of each sublayer, and the
# residual path from input to output never passes through a norm.
attn_out, _ = self_attention(layer_norm(x, "attn_norm"), attention_mask)
h = x + attn_out
pre_out = h + ffn(layer_norm(h, "ffn_norm"))
pre_block = TransformerBlock(dim, n_heads, ffn_dim=ffn_dim, activation="gelu", norm_position="pre", backend="eager")
pre_block.load_state_dict(block.state_dict())
check("pre-norm block == TransformerBlock(norm_position='pre')", pre_out, pre_block(x, mask=mask).hidden, atol=1e-5)
print(f"output scale: post-norm std {post_out.std():.2f} (renormalised), pre-norm std {pre_out.std():.2f} (not)")

# ---------------------------------------------------------------------------------------------
section("6. What the norm position does to a deep stack (at initialisation)")
# Two measurements on a deep stack with PyTorch's default initialisation, on random inputs and a
# random regression target:
# * the size of the residual stream after each layer: pre-norm keeps adding to it, so it grows with
#   depth; post-norm renormalises after every sublayer;
# * the gradient norm of each layer's parameters: Xiong et al. (2020) show that post-norm gives the
#   layers near the output much larger gradients than the others, one reason post-norm models need
#   a learning-rate warm-up; pre-norm spreads gradients more evenly.
depth = 8 if args.quick else 24
measures = {}
for position in ("pre", "post"):
    torch.manual_seed(1)
    stack = TransformerStack(depth, 64, 4, norm_position=position, final_norm=position == "pre", backend="sdpa")
    inputs = torch.randn(4 if args.quick else 16, 32, 64)
    hidden, rms = inputs, []
    with torch.no_grad():
        for layer in stack.layers:
            hidden = layer(hidden).hidden
            rms.append(hidden.pow(2).mean().sqrt().item())
    out = stack(inputs).hidden
    torch.nn.functional.mse_loss(out, torch.randn_like(out)).backward()
    grads = [torch.sqrt(sum(p.grad.pow(2).sum() for p in layer.parameters())).item() for layer in stack.layers]
    measures[position] = (rms, grads)
    print(f"{position}-norm: residual RMS {rms[0]:.2f} -> {rms[-1]:.2f}; "
          f"gradient norm first layer {grads[0]:.3f}, last layer {grads[-1]:.3f}")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
layers = range(1, depth + 1)
for position, (rms, grads) in measures.items():
    ax1.plot(layers, rms, "o-", label=f"{position}-norm")
    ax2.plot(layers, grads, "o-", label=f"{position}-norm")
ax1.set(xlabel="layer", ylabel="RMS of the residual stream", title="activation size after each block")
ax2.set(xlabel="layer", ylabel="gradient norm of the layer's parameters", title="gradients at initialisation")
ax1.legend()
ax2.legend()
save(fig, args.out, "pre_vs_post.png")

# ---------------------------------------------------------------------------------------------
section("7. The same block in NumPy, backward pass included")
# glassformer.numpy_ref holds this block in NumPy with every gradient derived by hand (softmax
# Jacobian, LayerNorm backward, GELU derivative, residual splits). Its parameter names are the
# torch block's, so the weights copy across. In float64 it agrees with autograd to ~1e-14.
block64 = TransformerBlock(dim, n_heads, ffn_dim=ffn_dim, norm_position="post", backend="eager").double()
block64.load_state_dict(block.state_dict())
ref = NumpyTransformerBlock({k: v.double().numpy() for k, v in block.state_dict().items()}, n_heads, norm_position="post")
x64 = x[:1].double().requires_grad_(True)
upstream = torch.randn_like(x64)  # the gradient arriving from the layers above: dL/dy
y_torch = block64(x64).hidden
(y_torch * upstream).sum().backward()
y_np, cache = ref.forward(x64.detach().numpy())
dx_np, grads_np = ref.backward(upstream.numpy(), cache)
check("NumPy forward == torch (float64)", y_np, y_torch, atol=1e-10)
check("NumPy dL/dx == autograd", dx_np, x64.grad, atol=1e-10)
worst = max(np.abs(grads_np[n] - p.grad.numpy()).max() for n, p in block64.named_parameters())
check(f"NumPy gradients of all {len(grads_np)} parameters == autograd", torch.tensor(worst), torch.tensor(0.0), atol=1e-10)
print(f"\nLesson 04 done; figures in {args.out}")
