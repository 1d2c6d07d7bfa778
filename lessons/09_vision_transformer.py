"""Lesson 09: the vision transformer, by hand: patches, positions, one encoder block, attention rollout.

Run:  python lessons/09_vision_transformer.py [--out DIR] [--quick]

A transformer reads a sequence of vectors; a picture is a grid of pixels. The ViT (Dosovitskiy et
al. 2020, "An Image is Worth 16x16 Words") bridges the two with almost nothing:

1. cut the image into ``p x p`` **patches** and flatten each one: a 28x28 image with ``p = 4``
   becomes 49 vectors of 16 pixels;
2. map each patch to the model width with one shared **linear** layer (written as a strided
   convolution, which is the same computation);
3. put a learned **[CLS]** token in front and add a learned **position** vector to every token,
   because attention alone has no idea which patch sat where;
4. run the usual pre-norm **encoder** blocks; the classifier reads the [CLS] token at the end.

This lesson builds each step by hand and checks it against ``glassformer.models.vit``, then asks
where the [CLS] token looks: per head, and with **attention rollout** (Abnar & Zuidema 2020),
which follows attention through all layers and the residual connections
(``glassformer.viz.vit``). Without ``--quick`` and with Fashion-MNIST installed
(``make fashion-mnist``) the model first trains for a minute or less, so that the maps mean something.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, parse_args, save, section, show

from glassformer.data.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD, ImageDataError, load_fashion_mnist
from glassformer.models.vit import ViT, interpolate_positions, patchify
from glassformer.models.vit.config import vit_fashion
from glassformer.viz.vit import attention_rollout, cls_attention_maps, plot_head_overlays, vit_attentions

args = parse_args("09", __doc__)
torch.manual_seed(0)


def fashion_or_drawn(n: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``n`` Fashion-MNIST test images (uint8 (n, 28, 28)) and labels, or one drawn trouser when absent."""
    try:
        images, labels = load_fashion_mnist("test")
        return images[:n], labels[:n], True
    except (ImageDataError, FileNotFoundError) as missing:
        print(f"({missing}; drawing a trouser instead)")
    trouser = torch.zeros(1, 28, 28, dtype=torch.uint8)
    trouser[0, 3:26, 8:13] = 200  # left leg
    trouser[0, 3:26, 15:20] = 200  # right leg
    trouser[0, 3:8, 8:20] = 220  # waist
    return trouser, torch.tensor([1]), False


# 28x28 grayscale, width 128, 6 blocks of 4 heads; patches of 4 (49 tokens) here, where the preset
# trains patches of 7 (16 tokens: three times cheaper on a CPU, see docs/vit.md)
config = vit_fashion().replace(patch_size=4)
model = ViT(config).eval()
raw, labels, have_fashion = fashion_or_drawn(256)
pixels = ((raw.float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0])[:, None]  # (N, 1, 28, 28)
x = pixels[:1]  # (1, 1, 28, 28): the image this lesson follows
p = config.patch_size

# ---------------------------------------------------------------------------------------------
section("1. Patches by hand")
# Tensor.unfold(dim, size, step) slides a window along one dimension. Along the rows and then the
# columns, with step = size, it cuts the image into non-overlapping p x p tiles:
# (B, C, H, W) -> (B, C, H/p, W/p, p, p). Row-major order of the tiles is the token order.
tiles = x.unfold(2, p, p).unfold(3, p, p)  # (1, 1, 7, 7, 4, 4)
grid = tiles.shape[2]
by_hand = tiles.permute(0, 2, 3, 1, 4, 5).reshape(1, grid * grid, -1)  # (1, 49, C*p*p)
print(f"{tuple(x.shape)} image -> {grid}x{grid} = {grid * grid} patches of {by_hand.shape[-1]} pixels")
check("unfold by hand == glassformer.models.vit.patchify", by_hand, patchify(x, p))

# The patch embedding is one linear map shared by all patches. A Conv2d with kernel = stride = p
# computes exactly that: each output position is the dot product of the kernel with one tile.
weight = model.patch_embed.weight.detach()  # (dim, C, p, p)
embedded = by_hand @ weight.flatten(1).T + model.patch_embed.bias.detach()  # (1, 49, dim)
conv = model.patch_embed(x).flatten(2).transpose(1, 2)  # (1, 49, dim)
check("patches @ W + b == the strided-convolution patch embedding", embedded, conv, atol=1e-5)

fig, axes = plt.subplots(grid, grid, figsize=(5, 5))
for k, ax in enumerate(axes.flat):
    ax.imshow(by_hand[0, k].reshape(p, p), cmap="gray", vmin=pixels.min(), vmax=pixels.max())
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"the image as {grid * grid} tokens of {p}x{p} pixels (row-major order)")
save(fig, args.out, "patches.png")

# ---------------------------------------------------------------------------------------------
section("2. [CLS] and positions")
# Attention treats its input as a set: permute the patches and every output is permuted the same
# way, and the [CLS] token's output does not change at all. Without positions, a ViT could not
# tell a trouser from the same pixels shuffled. We show it by zeroing the position table.
cls = model.cls_token.detach().expand(1, -1, -1)  # (1, 1, dim)
perm = torch.randperm(grid * grid)
no_positions = ViT(config).eval()
no_positions.load_state_dict(model.state_dict())
with torch.no_grad():
    no_positions.positions.zero_()


def cls_out(tokens: torch.Tensor, m: ViT) -> torch.Tensor:
    """The [CLS] token's final output for patch embeddings ``tokens`` (1, 49, dim), positions added."""
    h = torch.cat([cls, tokens], dim=1) + m.positions  # (1, 50, dim)
    for block in m.blocks:
        h = block(h).hidden
    return m.norm(h)[:, 0]  # (1, dim)


with torch.no_grad():
    check(
        "no positions: shuffled patches leave the [CLS] output unchanged",
        cls_out(embedded[:, perm], no_positions),
        cls_out(embedded, no_positions),
        atol=1e-5,
    )
    moved = (cls_out(embedded[:, perm], model) - cls_out(embedded, model)).abs().max().item()
print(f"with the learned positions the same shuffle moves the [CLS] output by up to {moved:.3f}")

# A model trained at 28x28 can read another size: the position table is a 7x7 grid of vectors,
# and resizing it bicubically (as transformers' interpolate_pos_encoding does) gives positions for
# a 10x10 grid (40x40 images).
table = model.positions.detach()  # (1, 1 + 49, dim)
patch_rows = table[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)  # (1, dim, 7, 7)
resized = F.interpolate(patch_rows, size=(10, 10), mode="bicubic", align_corners=False)
resized = torch.cat([table[:, :1], resized.permute(0, 2, 3, 1).reshape(1, 100, -1)], dim=1)
check("bicubic resize by hand == interpolate_positions", resized, interpolate_positions(table, 1, 10, 10))


def similarity_to(rows: torch.Tensor, side: int, index: int) -> torch.Tensor:
    """Cosine similarity of every patch position to position ``index``, as a side x side map."""
    return F.cosine_similarity(rows[0, 1:], rows[0, 1 + index][None], dim=-1).reshape(side, side)


fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.6))
a1.imshow(similarity_to(table, grid, grid * 3 + 3), cmap="viridis")
a1.set_title("7x7 positions: similarity to the centre")
a2.imshow(similarity_to(resized, 10, 10 * 5 + 5), cmap="viridis")
a2.set_title("resized to 10x10 (bicubic)")
save(fig, args.out, "positions.png")

# ---------------------------------------------------------------------------------------------
section("3. One encoder block by hand")
# Pre-norm, as every ViT: x = x + attention(LN(x)); x = x + MLP(LN(x)). Same block as lesson 04,
# here on 50 tokens: [CLS] and the 49 patches.
block = model.blocks[0]
W = {name: t.detach() for name, t in block.named_parameters()}
h0 = torch.cat([cls, conv.detach()], dim=1) + table  # (1, 50, dim): the embeddings
heads, d = config.n_heads, config.dim // config.n_heads


def layer_norm(h: torch.Tensor, name: str) -> torch.Tensor:
    mean, var = h.mean(-1, keepdim=True), h.var(-1, keepdim=True, unbiased=False)
    return (h - mean) / torch.sqrt(var + config.norm_eps) * W[f"{name}.weight"] + W[f"{name}.bias"]


def linear(h: torch.Tensor, name: str) -> torch.Tensor:
    return h @ W[f"{name}.weight"].T + W[f"{name}.bias"]


n = layer_norm(h0, "attn_norm")
q, k, v = (linear(n, f"attn.{s}_proj").view(1, -1, heads, d).transpose(1, 2) for s in "qkv")  # (1, H, 50, d)
weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)  # (1, H, 50, 50)
h1 = h0 + linear((weights @ v).transpose(1, 2).reshape(1, -1, config.dim), "attn.o_proj")
z = linear(layer_norm(h1, "ffn_norm"), "ffn.up")  # (1, 50, ffn_dim)
h2 = h1 + linear(z * 0.5 * (1 + torch.erf(z / math.sqrt(2))), "ffn.down")  # exact GELU
with torch.no_grad():
    lib = block(model.embed(x), return_weights=True)
check("hand block == ViT block 0 (output)", h2, lib.hidden, atol=1e-5)
check("hand block == ViT block 0 (attention weights)", weights, lib.self_weights, atol=1e-6)
show("where [CLS] looks in block 0, head 0 (first 8 keys)", weights[0, 0, 0, :8])

# ---------------------------------------------------------------------------------------------
section("4. Where the [CLS] token looks: per head and rolled out")
if have_fashion and not args.quick:
    # one pass over 5,000 images (under a minute), so that the maps below are a model's and not noise
    train, train_labels = load_fashion_mnist("train")
    train = ((train[:5_000].float() / 255 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0])[:, None]
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    starts = range(0, 5_000, 64)
    for start in starts:
        loss = model(train[start : start + 64], labels=train_labels[start : start + 64]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(pixels).logits.argmax(-1) == labels).float().mean().item()
    print(f"after {len(starts)} steps: test accuracy {accuracy:.1%} on {len(labels)} test images")

# vit_attentions switches every attention module to the eager path (SDPA never forms the weights).
attentions, _ = vit_attentions(model, x)
# Rollout by hand: average the heads, add the identity (the residual path carries as much as the
# attention), re-normalise the rows, multiply the layers from the last to the first.
rolled = torch.eye(config.seq_len)
for layer in attentions:
    a = layer[0].mean(0) + torch.eye(config.seq_len)  # (50, 50)
    rolled = (a / a.sum(-1, keepdim=True)) @ rolled
check(
    "rollout by hand == glassformer.viz.vit.attention_rollout",
    rolled,
    attention_rollout(attentions)[0],
    atol=1e-5,
)
check("each row of the rollout is a distribution", rolled.sum(-1), torch.ones(config.seq_len), atol=1e-5)
last = cls_attention_maps(attentions)[0]  # (H, 7, 7)
print(f"last layer: the heads' [CLS] maps peak at patches {[int(m.argmax()) for m in last]}")
plot_head_overlays(
    x,
    attentions,
    args.out / "rollout.png",
    title="[CLS] attention of the last layer per head, and the rollout over all layers",
)
print(f"saved {args.out / 'rollout.png'}")
