"""Lesson 10: CLIP, by hand: the contrastive loss, duplicate captions, the tokenizer, a tiny retrieval.

Run:  python lessons/10_clip.py [--out DIR] [--quick]

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision") trains two encoders side by side, one for images (a ViT) and one for text (a causal
transformer), so that a picture and its caption land on nearby points of one shared space. There
is no label set: the captions are the supervision.

1. each tower ends in a linear **projection** into the shared space, and the vectors are
   **L2-normalised**, so that the dot product of an image and a caption is their cosine;
2. a batch of B pairs gives a B x B matrix of cosines, times a learned **scale** (the inverse of a
   temperature, ``exp(logit_scale)``, clamped at 100);
3. the loss is **InfoNCE** both ways: each caption must pick its own image out of the B in the batch
   (a B-way cross-entropy along its row) and each image its own caption (along the columns).

This lesson computes that loss by hand on a toy batch and checks it against
``glassformer.models.clip``; shows what goes wrong when two pairs of a batch share a caption and
what the library's ``duplicate_captions`` choice does about it; tokenizes a caption with CLIP's
byte-pair encoding by hand; and finally trains a small CLIP on the synthetic shapes of
``glassformer.data.shapes`` for a few hundred steps, measures text-to-image retrieval, and draws
the similarity matrix and the loss and temperature over training. ``--quick`` trains 300 steps
on 2,000 pictures (about half a minute); without it, 1,500 steps on 6,000 (a few minutes on one core).
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import regex
import torch
import torch.nn.functional as F
from _lesson import check, heatmap, parse_args, save, section, show

from glassformer.data.shapes import ShapesConfig, ShapesSplit, shapes_split
from glassformer.metrics import chance_recall_at_k, recall_at_k
from glassformer.models.clip import CLIP, contrastive_loss, example_batch
from glassformer.models.clip.config import clip_shapes, tiny
from glassformer.tokenizers.clip import EOT, SOT, WORD_END, CLIPTokenizer, read_clip_merges

args = parse_args("10", __doc__)
torch.manual_seed(0)


def cross_entropy_by_hand(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``-sum_j q_ij log softmax(logits_i)_j``, for soft target rows ``q`` (B, B).

    A logit of -inf (left out of the softmax) has log-probability -inf and target 0: 0 log 0 = 0."""
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)
    return torch.where(targets > 0, -targets * log_p, 0.0).sum(dim=1).mean()


def infonce_by_hand(logits_per_text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: captions pick images along the rows, images pick captions along the columns."""
    return (
        cross_entropy_by_hand(logits_per_text, targets) + cross_entropy_by_hand(logits_per_text.T, targets.T)
    ) / 2


# ---------------------------------------------------------------------------------------------
section("1. InfoNCE by hand on a toy batch")
# Four pairs, features of width 8 as the two projections would give them. Caption i belongs to
# image i; the text features are the image features plus noise, so the diagonal should win.
B, P = 4, 8
image_features = torch.randn(B, P, dtype=torch.float64)
text_features = image_features + 0.8 * torch.randn(B, P, dtype=torch.float64)
# Normalised, the dot products are cosines in [-1, 1]. Softmax over cosines alone would be almost
# flat (a gap of at most 2 between the best and the worst), so they are multiplied by a scale:
# CLIP starts it at 1/0.07 = 14.3 and learns it.
image_embeds = image_features / image_features.norm(dim=1, keepdim=True)
text_embeds = text_features / text_features.norm(dim=1, keepdim=True)
scale = 1 / 0.07
logits_per_image = scale * image_embeds @ text_embeds.T  # (B images, B captions)
logits_per_text = logits_per_image.T  # row i: caption i against every image
show("logits_per_text = scale * T I^T (rows: captions, columns: images)", logits_per_text, decimals=2)
eye = torch.eye(B, dtype=torch.float64)  # one-hot targets: the diagonal
loss = infonce_by_hand(logits_per_text, eye)
print(f"InfoNCE = {loss.item():.4f}; a model that knew nothing would score ln(B) = {math.log(B):.4f}")
check("InfoNCE by hand == glassformer.models.clip.contrastive_loss", loss, contrastive_loss(logits_per_text))
check(
    "cross-entropy by hand == torch's F.cross_entropy (captions -> images)",
    cross_entropy_by_hand(logits_per_text, eye),
    F.cross_entropy(logits_per_text, torch.arange(B)),
)

# The same computation inside the model: the tiny twin of the clip-shapes preset with random
# weights, on a random batch. The embeddings it returns are already unit length.
toy = CLIP(tiny(clip_shapes())).eval()
batch = example_batch(toy.config, batch_size=B)
with torch.no_grad():
    out = toy(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])  # no caption ids: B classes
by_hand = infonce_by_hand(toy.scale() * out.text_embeds @ out.image_embeds.T, torch.eye(B))
check("InfoNCE by hand from CLIP's embeddings and scale == CLIP(...).loss", by_hand, out.loss, atol=1e-5)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
heatmap(a1, logits_per_text, [f"caption {i}" for i in range(B)], [f"image {i}" for i in range(B)],
        "logits: scale x cosine")  # fmt: skip
heatmap(a2, logits_per_text.softmax(dim=1), [f"caption {i}" for i in range(B)], [f"image {i}" for i in range(B)],
        "softmax per caption: the diagonal is the target", vmin=0, vmax=1)  # fmt: skip
save(fig, args.out, "infonce.png")

# ---------------------------------------------------------------------------------------------
section("2. Two pairs, one caption: the ln(copies) floor")
# A data set of templated captions repeats itself: two different pictures of "a small red circle"
# can share a batch. Their captions are the same tokens, so the text tower gives them the same
# embedding, and plain InfoNCE asks caption 1 to prefer image 1 over image 2 while caption 2 (the
# same vector) must prefer image 2 over image 1. No model can: the best it can do is a tie, which
# costs ln(2) on each of those rows. With k copies, ln(k).
#
# Take the best model there could be: every picture sits exactly on its caption's embedding, the
# three distinct captions orthogonal. Pairs 1 and 2 share caption "b".
basis = torch.eye(P, dtype=torch.float64)
text_embeds = basis[[0, 1, 1, 2]]  # captions a, b, b, c
image_embeds = text_embeds.clone()  # images 1 and 2 both show "b"
caption_ids = torch.tensor([0, 1, 1, 2])
copies = (caption_ids[:, None] == caption_ids[None, :]).sum(dim=1).double()  # (B,) copies of each caption
floor = (copies.log().sum() / B).item()  # rows with k copies tie k ways, both directions alike
print(f"copies per pair {copies.tolist()}: the floor of plain InfoNCE is mean(ln copies) = {floor:.4f}")
same = caption_ids[:, None] == caption_ids[None, :]  # (B, B)


def mask_by_hand(logits: torch.Tensor) -> torch.Tensor:
    """In-batch de-duplication: the other pairs with the query's caption leave every softmax (-inf)."""
    return logits.masked_fill(same & ~torch.eye(B, dtype=torch.bool), -math.inf)


# The three choices, by hand: "negatives" (plain InfoNCE: the duplicate is one more negative),
# "mask" (the duplicate is left out: neither pushed away nor pulled in), "soft_targets" (the
# target probability is shared evenly among the copies: all of them pulled in).
soft = same.double() / same.sum(dim=1, keepdim=True)
choices = {
    "negatives": lambda logits: infonce_by_hand(logits, eye),
    "mask": lambda logits: infonce_by_hand(mask_by_hand(logits), eye),
    "soft_targets": lambda logits: infonce_by_hand(logits, soft),
}
scales = torch.logspace(0, 2, 25, dtype=torch.float64)  # 1 .. 100, the clamp
curves: dict[str, list[float]] = {name: [] for name in choices}
for s in scales:
    logits = s * text_embeds @ image_embeds.T  # logits_per_text
    for name, loss_of in choices.items():
        curves[name].append(loss_of(logits).item())
        if s == scales[-1]:
            check(f"'{name}' by hand == contrastive_loss(..., duplicates='{name}') at scale 100", loss_of(logits),
                  contrastive_loss(logits, caption_ids, name))  # fmt: skip
check("plain InfoNCE at scale 100 sits on the floor mean(ln copies)", curves["negatives"][-1], floor)
check(
    "soft targets on word-for-word duplicates == plain InfoNCE",
    curves["soft_targets"][-1],
    curves["negatives"][-1],
)
print(f"at scale 100: negatives {curves['negatives'][-1]:.4f}, soft_targets {curves['soft_targets'][-1]:.4f}, "
      f"mask {curves['mask'][-1]:.2e}")  # fmt: skip
# Soft targets only differ when one id covers different texts: paraphrases of one composition
# ("a red circle left of a star" / "a star right of a red circle") have different embeddings,
# and soft targets then pull them onto one point, where "mask" merely stops pushing them apart.
# The data set hands out such ids with split.dataset(ids="composition"); section 4 trains with them.

fig, ax = plt.subplots(figsize=(6, 3.8))
for name, values in curves.items():
    ax.plot(
        scales, values, label=f"duplicate_captions='{name}'", lw=2, ls="--" if name == "soft_targets" else "-"
    )
ax.axhline(floor, color="gray", lw=1, ls=":", label=f"mean ln(copies) = {floor:.3f}")
ax.set_xscale("log")
ax.set_xlabel("scale exp(logit_scale)")
ax.set_ylabel("loss of a perfect model")
ax.set_title("two pairs share a caption: only 'mask' can reach 0")
ax.legend(fontsize=8)
save(fig, args.out, "duplicate_floor.png")

# ---------------------------------------------------------------------------------------------
section("3. CLIP's tokenizer by hand")
# CLIP's text side is byte-pair encoding (BPE) over lower-cased text, with two twists on GPT-2's:
# spaces are dropped (they only separate pieces) and the last symbol of every word carries
# "</w>", so "cat</w>" (the word) and "cat" (the start of "catalog") are different tokens.
# The merges are OpenAI's file; the vocabulary is rebuilt from it (glassformer.tokenizers.clip).
tokenizer = CLIPTokenizer.from_merges_file()
ranks = {pair: rank for rank, pair in enumerate(read_clip_merges())}
caption = "A small  RED circle above a large blue square."
text = " ".join(caption.split()).lower()  # whitespace runs -> one space, lower case (and NFC)
# The pieces: letter runs, single digits, runs of other symbols; whitespace between them dropped.
pieces = regex.findall(r"\p{L}+|\p{N}|[^\s\p{L}\p{N}]+", text)
print(f"pieces: {pieces}")


def bpe_by_hand(word: str) -> list[str]:
    """Start from single characters (the last with </w>) and merge the best-ranked pair until none is left.

    Plain ASCII stands for itself in CLIP's byte alphabet, so a character is a symbol here."""
    symbols = [*word[:-1], word[-1] + WORD_END]
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == math.inf:
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


tokens = [t for piece in pieces for t in bpe_by_hand(piece)]
ids = [tokenizer.vocab[t] for t in tokens]
print("tokens:", "  ".join(f"{t}={i}" for t, i in zip(tokens, ids)))
check("BPE by hand == CLIPTokenizer.encode (ids)", torch.tensor(ids), torch.tensor(tokenizer.encode(caption)))
# Inside a longer word, "square" is a different token: the one without the word end.
inner = bpe_by_hand("squarely")
print(
    f"squarely -> {inner}: 'square' is id {tokenizer.vocab['square']}, 'square</w>' id {tokenizer.vocab['square</w>']}"
)
check("BPE by hand == CLIPTokenizer.encode ('squarely')", torch.tensor([tokenizer.vocab[t] for t in inner]),
      torch.tensor(tokenizer.encode("squarely")))  # fmt: skip
# The text tower reads [SOT] caption [EOT], padded with EOT to a fixed length; the feature is the
# state at the first EOT (the causal mask has let it see the whole caption by then).
framed = [tokenizer.vocab[SOT], *ids, tokenizer.vocab[EOT]]
context = 24
row = framed + [tokenizer.vocab[EOT]] * (context - len(framed))
encoded = tokenizer.encode_captions(caption, context_length=context)
check("framed and padded by hand == encode_captions (input_ids)", torch.tensor([row]), encoded["input_ids"])
check("attention mask by hand == encode_captions", torch.tensor([[1] * len(framed) + [0] * (context - len(framed))]),
      encoded["attention_mask"])  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("4. A tiny retrieval on synthetic shapes")
# Pictures of one or two coloured shapes with captions such as "a small red circle above a large
# blue square" (and paraphrases in training). Four compositions ("green triangle", "red star",
# "blue circle", "yellow square") never appear in training; the test_heldout split shows each of
# its pictures at least one of them. 32x32 pictures in 8x8 patches keep the steps cheap.
steps, n_train, n_test = (300, 2_000, 500) if args.quick else (1_500, 6_000, 1_000)
data = ShapesConfig(image_size=32)
splits = {name: shapes_split(name, n, config=data) for name, n in
          (("train", n_train), ("test_seen", n_test), ("test_heldout", n_test))}  # fmt: skip
base = clip_shapes()
config = base.replace(
    vision=base.vision.replace(image_size=32, patch_size=8, dim=64, n_layers=2, n_heads=4, ffn_dim=256),
    dim=64, n_layers=2, n_heads=4, ffn_dim=256, projection_dim=64, max_seq_len=24,
)  # fmt: skip
model = CLIP(config)
print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters "
      f"({model.token_embed.weight.numel() / 1e6:.1f}M of them the 49,408-token embedding)")  # fmt: skip


def encoded_split(split: ShapesSplit, ids: str = "caption") -> dict[str, torch.Tensor]:
    """The whole split as tensors: normalised pixels, token ids, mask and the caption ids the loss uses."""
    pairs = split.dataset(ids=ids, image_size=32)
    tokens = tokenizer.encode_captions(split.captions, context_length=config.max_seq_len, padding="longest")
    return {"pixel_values": pairs.pixels(slice(None)), "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"], "caption_ids": pairs.caption_ids}  # fmt: skip


# Composition ids in training: the paraphrases of one scene are one caption to the loss.
train = encoded_split(splits["train"], ids="composition")
# The loss starts at ln(batch size), where every caption scores every picture alike, and stays
# there for a while. At lr 5e-4 this model leaves that plateau after about 80 steps; at 1e-3 it is
# still on it after the 300 quick steps (the failure the ln-line of training.png is there to show).
batch_size, lr = 64, 5e-4
optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
history: dict[str, list[float]] = {"loss": [], "scale": []}
sampler = torch.Generator().manual_seed(0)
start = time.perf_counter()
model.train()
for step in range(1, steps + 1):
    rows = torch.randint(0, n_train, (batch_size,), generator=sampler)
    out = model(**{k: v[rows] for k, v in train.items()})
    optimiser.zero_grad()
    out.loss.backward()
    optimiser.step()
    schedule.step()
    history["loss"].append(out.loss.item())
    history["scale"].append(out.metrics["logit_scale"].item())
    if step % 50 == 0 or step == steps:
        rate = step * batch_size / (time.perf_counter() - start)
        print(f"step {step}/{steps}: loss {out.loss.item():.3f} (ln {batch_size} = {math.log(batch_size):.3f}), "
              f"scale {history['scale'][-1]:.1f}, {rate:.0f} pairs/s")  # fmt: skip
model.eval()


def recall_at_1(similarity: torch.Tensor, query_ids: torch.Tensor, item_ids: torch.Tensor) -> float:
    """Share of queries whose best item has the query's caption id (several items may share one)."""
    return (item_ids[similarity.argmax(dim=1)] == query_ids).double().mean().item()


results, embedded = {}, {}
for name in ("test_seen", "test_heldout"):
    test = encoded_split(splits[name])  # canonical captions: one composition, one caption
    with torch.no_grad():
        images = model.encode_image(test["pixel_values"])  # (N, P), unit length
        texts = model.encode_text(test["input_ids"], test["attention_mask"])  # (N, P)
    similarity = texts @ images.T  # (N captions, N images) cosines
    ids = test["caption_ids"]
    t2i, i2t = recall_at_1(similarity, ids, ids), recall_at_1(similarity.T, ids, ids)
    chance = ((ids[:, None] == ids[None, :]).sum(dim=1).double() / len(ids)).mean().item()
    check(
        f"{name}: text->image R@1 by hand == glassformer.metrics.recall_at_k",
        t2i,
        recall_at_k(similarity, ids, ids, (1,))[1],
    )
    check(
        f"{name}: image->text R@1 by hand == recall_at_k", i2t, recall_at_k(similarity.T, ids, ids, (1,))[1]
    )
    check(f"{name}: chance by hand == chance_recall_at_k", chance, chance_recall_at_k(ids, ids, (1,))[1])
    results[name], embedded[name] = (t2i, i2t, chance), (images, texts, test["pixel_values"])

print(f"\n{'split':<14}{'text->image R@1':>17}{'image->text R@1':>17}{'chance':>9}")
for name, (t2i, i2t, chance) in results.items():
    print(f"{name:<14}{t2i:>17.1%}{i2t:>17.1%}{chance:>9.1%}")
# Chance is the share of the pictures that carry the query's caption: higher on test_heldout,
# where fewer compositions cover the split, so the two splits compare against their own chance.

images, texts, pixels = (part[:8] for part in embedded["test_seen"])  # the first 8 seen test pairs
fig, ax = plt.subplots(figsize=(9, 8.6))
heatmap(ax, model.scale().item() * texts @ images.T, splits["test_seen"].captions[:8],
        [f"image {j}" for j in range(8)], "")  # fmt: skip
for j in range(8):  # each picture above its column (the cells are square: 1/8 of the axes each way)
    thumb = ax.inset_axes((j / 8 + 0.01, 1.01, 1 / 8 - 0.02, 1 / 8 - 0.02))
    thumb.imshow((pixels[j].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1))  # back from [-1, 1]
    thumb.set_axis_off()
ax.set_title("scale x cosine: the seen test captions (rows) against their pictures", pad=80)
save(fig, args.out, "similarity.png")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
a1.plot(history["loss"], lw=0.8, label="loss")
a1.axhline(math.log(batch_size), color="gray", ls=":", label=f"ln {batch_size}: nothing learned")
a1.set_xlabel("step")
a1.set_title("symmetric InfoNCE (composition ids masked)")
a1.legend()
a2.plot(history["scale"], color="tab:orange")
a2.set_xlabel("step")
a2.set_title("learned scale exp(logit_scale) = 1 / temperature")
save(fig, args.out, "training.png")
