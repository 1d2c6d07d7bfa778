"""Lesson 06: the decoder, by hand: causal attention, a GPT-style block, and sampling the next token.

Run:  python lessons/06_decoder.py [--out DIR] [--quick]

An encoder (lesson 05) reads a whole text at once. A decoder *writes* one: it is trained to predict
every next token from the tokens before it, and then generates by feeding its own predictions back
in. Three things make that work:

1. **causal attention**: position t may attend to positions 0..t only. One mask does it, and it
   lets training score all T next-token predictions of a text in a single pass;
2. **the GPT block**: the encoder's block with that mask, in the pre-norm wiring
   (``x = x + sublayer(norm(x))``), GPT-2's tanh GELU, and the output head tied to the token
   embeddings;
3. **sampling**: the model gives a distribution over the vocabulary; how to draw from it decides
   how the text reads. *Temperature* sharpens or flattens it, *top-k* keeps the k likeliest
   tokens, *top-p* (nucleus) the smallest set holding probability p.

The lesson writes causal attention by hand and checks it against ``glassformer.nn.attention``
(``is_causal``, every backend), writes a GPT-2 block and the whole forward pass by hand and checks
them against ``glassformer.models.gpt``, trains that model for a few seconds on sentences from a
small grammar, and samples from it by hand, checked token for token against
``glassformer.generate`` with the same seed.
"""

from __future__ import annotations

import math
import random
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, heatmap, parse_args, save, section
from torch import Tensor

from glassformer.generate import GenerationConfig, generate, top_k_filter, top_p_filter
from glassformer.generate.processors import process_logits
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import GPTConfig
from glassformer.nn.attention import attention

args = parse_args("06", __doc__)
torch.manual_seed(0)

# ---------------------------------------------------------------------------------------------
section("1. Causal attention")
# Scores q.k / sqrt(d) as in lesson 01; every key later than its query gets -inf, so softmax gives
# it weight exactly 0. The mask is the strict upper triangle of the (T, T) score matrix.
words = "the cat sat on the mat".split()
T, n_heads, d = len(words), 2, 8
q, k, v = (torch.randn(1, n_heads, T, d) for _ in range(3))


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Queries are the last ``Tq`` of ``Tk`` positions (``Tq < Tk`` when earlier keys are cached)."""
    tq, tk = q.shape[-2], k.shape[-2]
    q_pos = torch.arange(tk - tq, tk)[:, None]  # the absolute position of each query
    future = torch.arange(tk)[None, :] > q_pos  # (Tq, Tk) True = a key after its query
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(future, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk)
    return weights @ v, weights


out, weights = causal_attention(q, k, v)
for backend in ("eager", "sdpa", "flash"):
    lib, _ = attention(q, k, v, is_causal=True, backend=backend, block_size=4)
    check(f"causal attention by hand == attention(is_causal=True, backend={backend!r})", out, lib, atol=1e-6)
_, lib_weights = attention(q, k, v, is_causal=True, return_weights=True)
check("its weights", weights, lib_weights, atol=1e-6)
# Generating with a KV cache, the newest tokens' queries meet every cached key: the mask is the
# bottom rows of the full one, and their outputs are the full computation's last rows.
lib_last, _ = attention(q[:, :, -2:], k, v, is_causal=True)
check("the last 2 queries against all 6 keys == the last 2 rows of the full pass", out[:, :, -2:], lib_last)
# No peeking: changing the last token's key and value changes no earlier position's output.
k2, v2 = k.clone(), v.clone()
k2[:, :, -1], v2[:, :, -1] = 100.0, -100.0
check("positions 0..T-2 ignore the last token", causal_attention(q, k2, v2)[0][:, :, :-1], out[:, :, :-1])

fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
heatmap(
    axes[0],
    (~future).float(),
    words,
    words,
    "causal mask (dark = may attend)",
    cmap="Blues",
    annotate=False,
    vmin=0,
    vmax=1.5,
)
heatmap(axes[1], weights[0, 0], words, words, "attention weights, head 0 (random q, k)")
for ax in axes:
    ax.set(xlabel="key (earlier tokens)", ylabel="query")
save(fig, args.out, "causal_mask.png")

# ---------------------------------------------------------------------------------------------
section("2. A GPT-2 block by hand")
# The training text: sentences from a small grammar, one word per token. A model that has learned
# it knows that "the" is followed by an adjective or a noun, a noun by a verb, and so on.
# Words are drawn with Zipf-like frequencies (the k-th word of a list 1/k as often as the first),
# as in real text, so the next-word distributions have a head and a tail.
DETS, ADJS = ["the", "a"], ["big", "small", "red", "old"]
NOUNS = ["cat", "dog", "bird", "man", "woman", "ball"]
VERBS, PREPS = ["sees", "chases", "likes", "finds"], ["on", "under", "near"]
VOCAB = sorted(set(DETS + ADJS + NOUNS + VERBS + PREPS + ["."]))
ID = {w: i for i, w in enumerate(VOCAB)}


def pick(rng: random.Random, words: list[str]) -> str:
    return rng.choices(words, weights=[1 / (rank + 1) for rank in range(len(words))])[0]


def noun_phrase(rng: random.Random) -> list[str]:
    return [pick(rng, DETS)] + ([pick(rng, ADJS)] if rng.random() < 0.3 else []) + [pick(rng, NOUNS)]


def grammar_sentence(rng: random.Random) -> list[str]:
    s = noun_phrase(rng) + [pick(rng, VERBS)] + noun_phrase(rng)
    if rng.random() < 0.3:
        s += [pick(rng, PREPS)] + noun_phrase(rng)
    return s + ["."]


config = GPTConfig(vocab_size=len(VOCAB), max_seq_len=32, n_layers=2, n_heads=4, dim=32, attn_backend="eager")
model = GPT(config).eval()  # GPT-2's choices: learned positions, LayerNorm, tanh GELU, biases, tied head
with torch.no_grad():  # norms away from 1 and 0, so the checks test their weights too
    for name, p in model.named_parameters():
        if "norm" in name:
            p.add_(0.2 * torch.randn_like(p))
W = {name: p.detach() for name, p in model.named_parameters()}


def layer_norm(h: Tensor, prefix: str) -> Tensor:
    mean, var = h.mean(-1, keepdim=True), h.var(-1, keepdim=True, unbiased=False)
    return (h - mean) / torch.sqrt(var + config.norm_eps) * W[f"{prefix}.weight"] + W[f"{prefix}.bias"]


def linear(h: Tensor, name: str) -> Tensor:
    return h @ W[f"{name}.weight"].T + W[f"{name}.bias"]


def gelu_tanh(z: Tensor) -> Tensor:
    """GPT-2's GELU: the tanh approximation of z * Phi(z) (lesson 04 has the exact erf form)."""
    return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3)))


def gpt_block(x: Tensor, layer: int) -> Tensor:
    """Pre-norm: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``; the residual path has no norm."""
    p = f"stack.layers.{layer}"
    b, t, c = x.shape
    h = layer_norm(x, f"{p}.attn_norm")
    q, k, v = (linear(h, f"{p}.attn.{n}_proj").view(b, t, config.n_heads, -1).transpose(1, 2) for n in "qkv")
    mixed, _ = causal_attention(q, k, v)  # (B, H, T, hd)
    x = x + linear(mixed.transpose(1, 2).reshape(b, t, c), f"{p}.attn.o_proj")
    h = layer_norm(x, f"{p}.ffn_norm")
    return x + linear(gelu_tanh(linear(h, f"{p}.ffn.up")), f"{p}.ffn.down")


x = torch.randn(2, 10, config.dim)
with torch.no_grad():
    lib_block = model.stack.layers[0](x, is_causal=True).hidden
check(
    "GPT-2 block by hand == GPT's block (stack.layers[0], is_causal=True)",
    gpt_block(x, 0),
    lib_block,
    atol=1e-5,
)

# ---------------------------------------------------------------------------------------------
section("3. The whole forward pass and the next-token loss")
# Token embedding + position embedding, the blocks, a final LayerNorm (pre-norm stacks end with
# one), then logits against the *same* embedding matrix (tied weights): score = h . wte[token].


def gpt_logits(ids: Tensor) -> Tensor:
    x = W["wte.weight"][ids] + W["wpe.weight"][: ids.shape[1]]  # (B, T, C)
    for layer in range(config.n_layers):
        x = gpt_block(x, layer)
    return layer_norm(x, "stack.final_norm") @ W["wte.weight"].T  # (B, T, V)


rng = random.Random(0)
sample_ids = torch.tensor([[ID[w] for w in grammar_sentence(rng) + grammar_sentence(rng)][:12]])
with torch.no_grad():
    logits = gpt_logits(sample_ids)
    check("forward by hand == GPT(ids).logits", logits, model(sample_ids).logits, atol=1e-5)
    # The targets are the inputs moved one step left: position t predicts token t + 1.
    loss = F.cross_entropy(logits[0, :-1], sample_ids[0, 1:])
    check(
        "next-token loss == GPT(ids[:-1], targets=ids[1:]).loss",
        loss,
        model(sample_ids[:, :-1], targets=sample_ids[:, 1:]).loss,
        atol=1e-5,
    )
print(
    f"untrained loss {loss.item():.3f}; a uniform guess over {len(VOCAB)} words costs {math.log(len(VOCAB)):.3f}"
)

# ---------------------------------------------------------------------------------------------
section("4. Training it for a few seconds")
stream = torch.tensor([ID[w] for _ in range(3000) for w in grammar_sentence(rng)])  # one long text
torch.manual_seed(1)
model = GPT(config.replace(attn_backend="sdpa"))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
steps, window = (150 if args.quick else 500), 16
start = time.perf_counter()
for step in range(1, steps + 1):
    offsets = torch.randint(0, len(stream) - window - 1, (32,))
    chunk = torch.stack([stream[o : o + window + 1] for o in offsets.tolist()])  # (32, 17)
    loss = model(chunk[:, :-1], targets=chunk[:, 1:]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 50 == 0:
        print(
            f"step {step:4d}  loss {loss.item():.3f}  {step * 32 * window / (time.perf_counter() - start):,.0f} tokens/s"
        )
model.eval()

# ---------------------------------------------------------------------------------------------
section("5. Sampling: temperature, top-k, top-p")
prompt_words = "the dog chases the".split()
prompt = torch.tensor([[ID[w] for w in prompt_words]])
with torch.no_grad():
    next_logits = model(prompt).logits[0, -1]  # (V,): a score for every possible next word
probs = torch.softmax(next_logits, -1)
print(
    f"after {' '.join(prompt_words)!r}: " + ", ".join(f"{VOCAB[i]} {p:.2f}" for p, i in zip(*probs.topk(5)))
)

# Temperature divides the logits: T < 1 sharpens the distribution (T -> 0 is greedy), T > 1
# flattens it (T -> infinity is uniform). Entropy measures how spread out it is.
for temp in (0.5, 1.0, 2.0):
    p = torch.softmax(next_logits / temp, -1)
    print(
        f"T={temp}: top word {VOCAB[int(p.argmax())]!r} with {p.max():.2f}, entropy {-(p * p.log()).sum():.2f} nats"
    )


def top_k_by_hand(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits, -inf elsewhere."""
    kept = torch.full_like(logits, float("-inf"))
    order = logits.argsort(descending=True)[:k]
    kept[order] = logits[order]
    return kept


def top_p_by_hand(logits: Tensor, p: float) -> Tensor:
    """Walk down the tokens from the likeliest, keeping each until the kept mass reaches p."""
    probs = torch.softmax(logits, -1)
    kept, mass = torch.full_like(logits, float("-inf")), 0.0
    for i in probs.argsort(descending=True).tolist():
        kept[i] = logits[i]
        mass += probs[i].item()
        if mass >= p:
            break
    return kept


# Filtered tokens hold -inf, so the checks compare what sampling sees: the renormalised
# probabilities, exactly 0 for every removed token.
top_k, top_p, temperature = 4, 0.8, 0.8
check(
    f"top-k={top_k} by hand == glassformer.generate.top_k_filter",
    torch.softmax(top_k_by_hand(next_logits, top_k), -1),
    torch.softmax(top_k_filter(next_logits[None], top_k)[0], -1),
)
check(
    f"top-p={top_p} by hand == glassformer.generate.top_p_filter",
    torch.softmax(top_p_by_hand(next_logits, top_p), -1),
    torch.softmax(top_p_filter(next_logits[None], top_p)[0], -1),
)
print(
    f"top-k={top_k} keeps {[VOCAB[i] for i in top_k_by_hand(next_logits, top_k).isfinite().nonzero().flatten()]}"
)
print(
    f"top-p={top_p} keeps {[VOCAB[i] for i in top_p_by_hand(next_logits, top_p).isfinite().nonzero().flatten()]}"
)


def process_by_hand(logits: Tensor) -> Tensor:
    """Hugging Face's order, which glassformer follows: temperature, then top-k, then top-p."""
    return top_p_by_hand(top_k_by_hand(logits / temperature, top_k), top_p)


settings = GenerationConfig(
    strategy="sample",
    temperature=temperature,
    top_k=top_k,
    top_p=top_p,
    max_new_tokens=12,
    seed=1234,
    cpu_kernels=False,
)
check(
    "temperature + top-k + top-p by hand == process_logits",
    torch.softmax(process_by_hand(next_logits), -1),
    torch.softmax(process_logits(next_logits[None], settings)[0], -1),
)

# The sampling loop: process the last position's logits, softmax, draw one token with a seeded
# generator, append it, repeat. glassformer.generate does the same with a KV cache (lesson 14),
# and seeds a private torch.Generator with config.seed, so the draws are the same ones.
generator = torch.Generator().manual_seed(settings.seed)
ids = prompt
with torch.no_grad():
    for _ in range(settings.max_new_tokens):
        step_probs = torch.softmax(process_by_hand(model(ids).logits[0, -1]), -1)
        token = torch.multinomial(step_probs[None], 1, generator=generator)  # (1, 1)
        ids = torch.cat([ids, token], dim=1)
by_hand = ids[0, prompt.shape[1] :]
library = generate(model, prompt, config=settings).tokens[0]
check("sampled tokens by hand == glassformer.generate (same seed)", by_hand, torch.tensor(library), atol=0)
print("sampled:", " ".join(prompt_words), "|", " ".join(VOCAB[i] for i in by_hand.tolist()))

# Drawing many times from one distribution: the frequencies approach the processed probabilities.
processed = torch.softmax(process_by_hand(next_logits), -1)
draws = torch.multinomial(processed, 4000, replacement=True, generator=torch.Generator().manual_seed(0))
frequency = torch.bincount(draws, minlength=len(VOCAB)) / len(draws)
print(f"4000 draws: largest |frequency - probability| {(frequency - processed).abs().max():.3f}")

fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), layout="constrained")
shown = probs.argsort(descending=True)[:10]
labels = [VOCAB[i] for i in shown.tolist()]
xs = torch.arange(len(shown))
for j, temp in enumerate((0.5, 1.0, 2.0)):
    axes[0].bar(
        xs + (j - 1) * 0.27, torch.softmax(next_logits / temp, -1)[shown], width=0.27, label=f"T = {temp}"
    )
axes[0].set_title(f"temperature: next word after '{' '.join(prompt_words)}'")
filters = {
    f"top-k = {top_k}": top_k_by_hand(next_logits, top_k),
    f"top-p = {top_p}": top_p_by_hand(next_logits, top_p),
}
axes[1].bar(xs - 0.2, probs[shown], width=0.4, color="lightgray", label="full distribution (T = 1)")
for j, (name, kept) in enumerate(filters.items()):
    axes[1].scatter(
        xs, torch.softmax(kept, -1)[shown], marker="o^"[j], s=50, zorder=3, label=f"{name}, renormalised"
    )
axes[1].set_title("top-k and top-p keep the head, renormalised")
axes[2].bar(xs - 0.2, processed[shown], width=0.4, label=f"T={temperature}, top-k={top_k}, top-p={top_p}")
axes[2].bar(xs + 0.2, frequency[shown], width=0.4, label="frequency in 4000 draws")
axes[2].set_title("what sampling draws")
for ax in axes:
    ax.set_xticks(xs, labels, rotation=45)
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
save(fig, args.out, "sampling.png")
print(f"\nLesson 06 done; figures in {args.out}")
