"""Lesson 13: LoRA and quantization, by hand: two small matrices, a merge, NF4 and int8 of one tensor.

Run:  python lessons/13_lora_and_quantization.py [--out DIR] [--quick]

Fine-tuning every weight of a model needs a gradient and two optimizer moments per weight, and
leaves a full copy of the model per task. LoRA (Hu et al. 2021) freezes the weights and learns,
for some linear layers ``y = W x``, a low-rank update instead:

    y = W x + s B A x,    A: (r, in), B: (out, r), s = alpha / r,

with r much smaller than ``in`` and ``out``: ``r (in + out)`` numbers to train and save per layer
instead of ``in * out``. ``B`` starts at zero, so training starts from exactly the base model, and
after training ``W + s B A`` can be folded into one matrix (a merge): no cost at inference.

Quantization shrinks the frozen weights themselves. int8 keeps one float scale per output row
and 8-bit integers; NF4 (Dettmers et al. 2023, "QLoRA") keeps 4-bit indices into a table of 16
values placed at the quantiles of a normal distribution, one scale per block of 64 weights, and
stores those scales in 8 bits too (double quantization). QLoRA trains LoRA on top of an NF4 base.

This lesson computes each of these by hand in plain torch and checks it against
``glassformer.peft`` and ``glassformer.quant``: a LoRA layer and its merge (bitwise unmerge in
float64), the trainable-parameter count, NF4 of one tensor down to the packed bytes and the
double-quantized scales, int8 per channel and LLM.int8()'s outlier split; it draws the NF4 table
over a histogram of normal weights with each format's error, and fine-tunes a tiny character
model with full training, LoRA and QLoRA (Tiny Shakespeare from the shared data folder, else this
file's own text). ``--quick`` trains a few dozen steps: the checks are the same.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from _lesson import check, parse_args, save, section, show

from glassformer.generate import generate
from glassformer.models.gpt import GPT
from glassformer.models.gpt.config import LLAMA_STYLE, GPTConfig
from glassformer.peft import (
    LoraConfig,
    inject_lora,
    load_adapter,
    lora_layers,
    merge_lora,
    save_adapter,
    set_merged,
    trainable_parameters,
)
from glassformer.quant import (
    NF4_CODE,
    Int8Linear,
    dequantize_4bit,
    dynamic_code,
    int8_matmul,
    quantize_4bit,
    quantize_rows,
)
from glassformer.tokenizers import CharTokenizer
from glassformer.utils.paths import data_file

args = parse_args("13", __doc__)
torch.manual_seed(0)


def corpus() -> tuple[str, str]:
    """The training text and where it came from: Tiny Shakespeare if present, else this file."""
    path = data_file("tinyshakespeare", "input.txt")
    if path is not None:
        return path.read_text(encoding="utf-8"), "Tiny Shakespeare"
    print("(Tiny Shakespeare is not in the data folder, GLASSFORMER_DATA; using this lesson's own text)")
    return Path(__file__).read_text(encoding="utf-8"), "this lesson's source"


text, source = corpus()
tokenizer = CharTokenizer.from_text(text + text.upper())  # the "shouted" text of section 7 too
config = GPTConfig(vocab_size=len(tokenizer), max_seq_len=64, n_layers=2, n_heads=4, dim=64,
                   **LLAMA_STYLE)  # fmt: skip
base = GPT(config).eval()  # a Llama-style decoder: q/k/v/o projections and a SwiGLU MLP per layer
print(f"model: {config.n_layers} layers, dim {config.dim}, vocab {config.vocab_size} characters of {source}")

# ---------------------------------------------------------------------------------------------
section("1. LoRA by hand: y = W x + (alpha / r) B A x")
# One linear layer of the model, its weight W (out, in) and the two factors of the update. A
# starts random (kaiming uniform, as peft), B at zero: the product B A is zero, so the adapted
# layer computes exactly the base layer's output until training has moved B.
r, alpha = 4, 8.0
layer_name = "stack.layers.0.attn.q_proj"
model = inject_lora(copy.deepcopy(base), LoraConfig(r=r, alpha=alpha, target=("q_proj", "v_proj")))
lora = model.get_submodule(layer_name)
W = base.get_submodule(layer_name).weight.detach()  # (64, 64)
A, B = lora.lora_A.weight.detach(), lora.lora_B.weight.detach()  # (r, in), (out, r)
print(
    f"{layer_name}: W {tuple(W.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, B all zero: {bool((B == 0).all())}"
)
x = torch.randn(3, 64)
with torch.no_grad():
    check("at the start (B = 0) the LoRA layer == the base layer", lora(x), x @ W.T, atol=0.0)
    ids = torch.tensor([tokenizer.encode("To be, or not to be")])
    check("... and the whole injected model == the base model", model(ids).logits, base(ids).logits, atol=0.0)

# A trained adapter has B != 0: put random numbers in both factors and redo the formula by hand.
scaling = alpha / r
with torch.no_grad():
    lora.lora_A.weight.normal_(std=0.2)
    lora.lora_B.weight.normal_(std=0.2)
A, B = lora.lora_A.weight.detach(), lora.lora_B.weight.detach()
by_hand = x @ W.T + scaling * (x @ A.T) @ B.T  # (3, 64): A x first, a rank-4 bottleneck, then B
with torch.no_grad():
    check(f"W x + (alpha / r) B A x by hand (s = {scaling:g}) == LoraLinear", by_hand, lora(x), atol=1e-6)
print(f"LoraLinear's scaling: {lora.scaling:g}; with rsLoRA alpha / sqrt(r) = {alpha / math.sqrt(r):g}")
check("rsLoRA scaling alpha / sqrt(r) == LoraConfig(use_rslora=True).scaling", alpha / math.sqrt(r),
      LoraConfig(r=r, alpha=alpha, use_rslora=True).scaling)  # fmt: skip
# Why rsLoRA (Kalajdzievski 2023): with alpha / r the update of a rank-r adapter shrinks as r grows
# (each of r directions is scaled by 1 / r), so large ranks learn no better than small ones;
# alpha / sqrt(r) keeps the update's size steady across ranks.
update = scaling * B @ A
print(
    f"rank of s B A: {torch.linalg.matrix_rank(update).item()} (r = {r}), in a {tuple(update.shape)} matrix"
)

# ---------------------------------------------------------------------------------------------
section("2. Merging by hand: W' = W + s B A, and back, bitwise in float64")
# For inference the update can be folded into the weight: one matmul instead of three. Unmerging
# by subtraction would not give W back exactly ((W + d) - d rounds); the library keeps the
# original weight aside while merged, so unmerge restores it to the bit.
base64 = copy.deepcopy(base).double()
model64 = inject_lora(copy.deepcopy(base64), LoraConfig(r=r, alpha=alpha, target=("q_proj", "v_proj")))
with torch.no_grad():
    for _, layer in lora_layers(model64):
        layer.lora_B.weight.normal_(std=0.2)  # as if trained
    unmerged_logits = model64(ids).logits
layer64 = model64.get_submodule(layer_name)
W64 = layer64.base.weight.detach().clone()
merged_by_hand = W64 + (layer64.lora_B.weight @ layer64.lora_A.weight) * layer64.scaling
set_merged(model64, True)
check(
    "W + s B A by hand == the merged weight (LoraLinear.merge)", merged_by_hand, layer64.base.weight, atol=0.0
)
with torch.no_grad():
    check("merged model's logits == unmerged model's", model64(ids).logits, unmerged_logits, atol=1e-10)
set_merged(model64, False)
check("unmerge gives back W bit for bit", layer64.base.weight, W64, atol=0.0)
d = (layer64.lora_B.weight @ layer64.lora_A.weight).detach() * layer64.scaling
changed = ((W64 + d) - d != W64).sum().item()
print(f"(W + d) - d differs from W in {changed} of {W64.numel()} entries: why the library keeps W instead")
plain = merge_lora(copy.deepcopy(model64))  # for good: the plain model again, base names, no adapters
check("merge_lora's plain layer == W + s B A by hand", plain.get_submodule(layer_name).weight, merged_by_hand,
      atol=0.0)  # fmt: skip
print(f"after merge_lora: {type(plain.get_submodule(layer_name)).__name__}, keys like the base's: "
      f"{sorted(plain.state_dict()) == sorted(base64.state_dict())}")  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("3. What trains: r (in + out) per adapted layer")
# Only A and B train; everything else is frozen (requires_grad False), so the optimizer holds two
# moments for the adapter alone and the weights need no gradient.
for target in (("q_proj", "v_proj"), "all-linear"):
    adapted = inject_lora(copy.deepcopy(base), LoraConfig(r=8, alpha=16, target=target))
    layers = [base.get_submodule(n) for n, _ in lora_layers(adapted)]
    by_hand = sum(8 * (m.in_features + m.out_features) for m in layers)
    total = sum(p.numel() for p in base.parameters())
    count = trainable_parameters(adapted)
    print(f"target {target!r}: {len(layers)} layers, {by_hand:,} trainable beside the base's {total:,} "
          f"({100 * by_hand / total:.2f}%) | library: {count}")  # fmt: skip
    check(
        f"trainable parameters by hand == trainable_parameters ({target})", by_hand, count.trainable, atol=0
    )

# ---------------------------------------------------------------------------------------------
section("4. NF4 of one tensor by hand: block absmax, nearest code, packed nibbles, 8-bit scales")
# Weights of trained networks are close to normal. The 16 NF4 values are quantiles of N(0, 1)
# rescaled to [-1, 1] (with an exact 0), so normal data uses them far more evenly than an evenly
# spaced 4-bit grid, which spends levels on the rarely reached tails (the picture of section 6).
show("NF4 code table (index 0..15)", NF4_CODE, 4)
w = torch.randn(64, 256) * 0.02  # 16,384 weights = 256 blocks of 64 = one block of 256 scales
blocks = w.reshape(-1, 64)  # row-major flattening, 64 consecutive weights per block
absmax = blocks.abs().amax(dim=1)  # (256,): each block's largest magnitude
scaled = (blocks * (1.0 / absmax)[:, None]).clamp(-1, 1)  # every block in [-1, 1]
codes = (scaled[..., None] - NF4_CODE).abs().argmin(dim=-1).reshape(-1)  # (16384,) nearest code value
packed = (codes[0::2] << 4 | codes[1::2]).to(torch.uint8)  # two codes per byte: element 2k high nibble
q = quantize_4bit(w)
check("packed NF4 bytes by hand == quantize_4bit(w).packed", packed, q.packed, atol=0)

# Double quantization: 256 float32 absmax values are 0.5 bit per weight on top of 4. Subtract
# their mean and store the rest as 8-bit codes of the signed dynamic table (denser near 0), with
# one float32 scale per 256 of them. bitsandbytes (on the CPU, and this library to match it) does
# not search the 256 codes per value: it rounds the normed value to a grid of 65,536 points in
# [-1, 1] and takes the code nearest to that grid point.
offset = absmax.mean()
centred = absmax - offset
absmax2 = centred.abs().max()  # the second-level scale (one per 256 blocks)
normed = (centred * (1.0 / absmax2)).clamp(-1, 1)
grid_index = ((normed + 1) * 0.5 * 65535 + 0.5).to(torch.int64)  # C-style truncation
grid = -1.0 + (2.0 * grid_index.float()) / 65535
dyn = dynamic_code()  # (256,) sorted values in [-1, 1]
codes8 = ((dyn[:-1] + dyn[1:]) / 2 < grid[:, None]).sum(dim=1)  # how many midpoints lie below: nearest
check("8-bit absmax codes by hand == q.absmax_q", codes8, q.absmax_q, atol=0)
check("second-level scale and offset == q.absmax_scale, q.absmax_offset", torch.stack([absmax2, offset]),
      torch.cat([q.absmax_scale, q.absmax_offset.reshape(1)]), atol=0)  # fmt: skip
nearest8 = (normed[:, None] - dyn).abs().argmin(dim=1)
print(f"codes the 65,536-point grid changes vs the truly nearest 8-bit code: {(nearest8 != codes8).sum().item()} "
      "of 256")  # fmt: skip
absmax_back = dyn[codes8] * absmax2 + offset  # (256,)
w_hat = (NF4_CODE[codes].reshape(-1, 64) * absmax_back[:, None]).reshape(w.shape)
check("dequantized by hand == dequantize_4bit(q)", w_hat, dequantize_4bit(q), atol=0.0)
single = (NF4_CODE[codes].reshape(-1, 64) * absmax[:, None]).reshape(w.shape)  # exact float32 scales
bits = q.nbytes() * 8 / w.numel()
print(
    f"bits per weight: {bits:.3f} (4 + 8/64 + two float32 per 16,384); single-level scales: {4 + 32 / 64:.3f}"
)
print(f"RMS error / RMS weight: NF4 double-quantized {((w - w_hat).norm() / w.norm()).item():.4f}, "
      f"single-level {((w - single).norm() / w.norm()).item():.4f}")  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("5. int8 by hand: one scale per output channel, and LLM.int8()'s outliers")
# Weight-only int8: each row (one output) is scaled so its largest magnitude maps to 127 and
# rounded: q = round(w * 127 / absmax_row); w ~= q * absmax_row / 127, within half a step.
row_max = w.abs().amax(dim=1)  # (64,)
q8 = torch.round(w * (127.0 / row_max)[:, None]).to(torch.int8)
rows = quantize_rows(w)
check("int8 codes by hand == quantize_rows(w).q", q8, rows.q, atol=0)
check("per-channel scale absmax / 127 == quantize_rows(w).scale", row_max / 127, rows.scale, atol=0.0)
w8 = q8.float() * (row_max / 127)[:, None]
print(
    f"max |w - q * scale| / (scale / 2): {((w - w8).abs() / (row_max / 254)[:, None]).max().item():.4f} (<= 1)"
)
linear = torch.nn.Linear(256, 64, bias=False)
with torch.no_grad():
    linear.weight.copy_(w)
check("Int8Linear.from_linear(layer).qweight == the codes by hand", Int8Linear.from_linear(linear).qweight, q8,
      atol=0)  # fmt: skip

# LLM.int8() (Dettmers et al. 2022) is about the activations: a few feature dimensions of large
# transformers carry values 20x larger than the rest, and quantizing a row of x to int8 with one
# scale would then crush every ordinary value to a few levels. It splits the columns: those with
# any |x| >= 6 are multiplied in float, the rest in int8 x int8 -> int32 with a scale per row of x
# and per output of W.
x = torch.randn(4, 256)
x[:, 7] *= 25.0  # one outlier feature, as in large models
outliers = (x.abs() >= 6.0).any(dim=0).nonzero().flatten()
inliers = x.clone()
inliers[:, outliers] = 0.0
x_max = inliers.abs().amax(dim=1)  # (4,): one scale per row of x
xq = torch.round(inliers * (127.0 / x_max)[:, None])
acc = xq.double() @ q8.double().T  # (4, 64): the int32 sums, exact in float64
mixed = acc.float() * ((x_max / 127)[:, None] * rows.scale[None, :]) + x[:, outliers] @ w8[:, outliers].T
check("LLM.int8() by hand (outlier columns in float) == int8_matmul(x, rows, 6.0)", mixed,
      int8_matmul(x, rows, threshold=6.0), atol=1e-5)  # fmt: skip
exact = x @ w.T
for label, y in (("int8 weights, x in float", x @ w8.T), ("all of x in int8", int8_matmul(x, rows, threshold=None)),
                 ("LLM.int8() split", mixed)):  # fmt: skip
    print(f"{label:>26}: relative error {((y - exact).norm() / exact.norm()).item():.4f}")
print(f"outlier columns: {outliers.tolist()} (of 256)")

# ---------------------------------------------------------------------------------------------
section("6. Picture: the NF4 levels over normal weights, and each format's error")
# A uniform 4-bit grid for comparison, by hand: 15 evenly spaced levels k / 7 of the block absmax.
uniform = (torch.round(scaled * 7) / 7 * absmax[:, None]).reshape(w.shape)
uniform_codes = torch.round(scaled * 7).reshape(-1) + 7  # 0..14
fp4 = dequantize_4bit(quantize_4bit(w, "fp4"))
errors = {"int8 per channel": w8, "NF4 (double quant)": w_hat, "NF4 (float32 scales)": single,
          "FP4": fp4, "uniform 4-bit": uniform}  # fmt: skip
relative = {k: ((w - v).norm() / w.norm()).item() for k, v in errors.items()}
for label, value in relative.items():
    print(f"{label:>22}: RMS error / RMS weight {value:.4f}")
fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
ax0.hist(scaled.reshape(-1), bins=120, color="lightgray", label="normal weights / block absmax")
for i, c in enumerate(NF4_CODE.tolist()):
    ax0.axvline(c, color="tab:blue", lw=1, label="NF4 code values" if i == 0 else None)
for i, c in enumerate((torch.arange(-7, 8) / 7).tolist()):
    ax0.axvline(c, color="tab:orange", lw=0.8, ls=":", label="uniform 4-bit levels" if i == 0 else None)
ax0.set_xlabel("value in its block, divided by the block's absmax")
ax0.legend(fontsize=7, loc="upper left")
ax0.set_title("NF4 puts its 16 levels at the normal's quantiles")
ax1.bar(torch.arange(16) - 0.2, torch.bincount(codes, minlength=16) / codes.numel(), width=0.4, label="NF4")
ax1.bar(torch.arange(15) + 0.2, torch.bincount(uniform_codes.long(), minlength=15) / codes.numel(), width=0.4,
        label="uniform 4-bit")  # fmt: skip
ax1.set_xlabel("code index")
ax1.set_ylabel("share of the weights")
ax1.legend(fontsize=8)
ax1.set_title("how often each code is used")
ax2.barh(list(relative), list(relative.values()), color=["tab:green", "tab:blue", "tab:cyan", "tab:purple",
                                                         "tab:orange"])  # fmt: skip
ax2.invert_yaxis()
ax2.set_xlabel("RMS error / RMS weight (64 x 256 normal weights)")
ax2.set_title("quantization error per format")
save(fig, args.out, "quantization.png")

# ---------------------------------------------------------------------------------------------
section("7. A tiny fine-tune: full training vs LoRA vs QLoRA")
# First a base model: the decoder above trained briefly on the text as it is. Then a new task it
# was not trained for, the same kind of text SHOUTED (all upper case), learned four ways from the
# same base: every weight (full), LoRA on q/v, LoRA on every linear layer, and QLoRA (the same
# adapters over an NF4 copy of the frozen base). On a d x d layer LoRA trains 2 r / d of the weights:
# 25% at d = 64 here, 0.4% at d = 4096 in a large model. Without --quick (about a minute of one
# core) the curves show LoRA on every linear layer following full fine-tuning closely with a fifth
# of its trained weights, QLoRA's curve on LoRA's, and q/v alone clearly behind: here the change
# of style needs the MLPs too.
pre_steps, tune_steps, batch = (60, 30, 16) if args.quick else (600, 150, 32)
chars = min(len(text), 220_000)
plain_ids = torch.tensor(tokenizer.encode(text[: chars * 3 // 4]))
shout_ids = torch.tensor(tokenizer.encode(text[chars * 3 // 4 : chars * 19 // 20].upper()))
held_out = torch.tensor(tokenizer.encode(text[chars * 19 // 20 : chars].upper()))
T = config.max_seq_len


def windows(data: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random windows of T tokens and their next tokens: (n, T) inputs and targets."""
    start = torch.randint(0, len(data) - T - 1, (n,), generator=generator)
    rows = torch.stack([data[s : s + T + 1] for s in start.tolist()])
    return rows[:, :-1], rows[:, 1:]


def train(net: torch.nn.Module, data: torch.Tensor, steps: int, lr: float, label: str) -> list[float]:
    """AdamW on the parameters that require a gradient; returns the loss of every step."""
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    generator, losses, started = torch.Generator().manual_seed(1), [], time.perf_counter()
    net.train()
    for step in range(steps):
        inputs, targets = windows(data, batch, generator)
        loss = net(inputs, targets=targets).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if steps >= 200 and (step + 1) % (steps // 5) == 0:  # the long runs say how far they are
            rate = (step + 1) * batch * T / (time.perf_counter() - started)
            print(f"{label:>22}: step {step + 1}/{steps}, loss {loss.item():.3f}, {rate:,.0f} tokens/s")
    seconds = time.perf_counter() - started
    print(f"{label:>22}: {steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"{steps * batch * T / seconds:,.0f} tokens/s")  # fmt: skip
    return losses


@torch.no_grad()
def held_out_loss(net: torch.nn.Module) -> float:
    net.eval()
    inputs, targets = windows(held_out, 64, torch.Generator().manual_seed(2))
    return net(inputs, targets=targets).loss.item()


pretrained = copy.deepcopy(base)
pre_losses = train(pretrained, plain_ids, pre_steps, 3e-3, "pre-training (all)")
print(f"the base on shouted text it never saw: held-out loss {held_out_loss(pretrained):.3f}")
adapters = {
    "full fine-tune": None,
    "LoRA r=8 q,v": LoraConfig(r=8, alpha=16, target=("q_proj", "v_proj")),
    "LoRA r=8 all-linear": LoraConfig(r=8, alpha=16, target="all-linear"),
    "QLoRA r=8 all-linear": LoraConfig(r=8, alpha=16, target="all-linear", quantize="nf4"),
}
curves, tuned = {}, {}
for label, lora_config in adapters.items():
    torch.manual_seed(3)  # the same A matrices for the runs that draw them
    net = copy.deepcopy(pretrained)
    if lora_config is not None:
        inject_lora(net, lora_config)
    count = trainable_parameters(net)
    curves[label] = train(net, shout_ids, tune_steps, 1e-3 if lora_config is None else 1e-2, label)
    tuned[label] = net
    share = (
        100 * count.trainable / sum(p.numel() for p in base.parameters())
    )  # of the base: QLoRA's are buffers
    print(
        f"{'':>22}  {count.trainable:,} trained ({share:.1f}% of the base), held-out loss {held_out_loss(net):.3f}"
    )

# The adapter alone is what a fine-tune now is on disk: a few kilobytes here, in peft's files.
lora_net = tuned["LoRA r=8 all-linear"]
with tempfile.TemporaryDirectory() as folder:
    save_adapter(lora_net, folder)
    files = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
    print(
        f"adapter folder: {files}; the base model's weights: {4 * sum(p.numel() for p in base.parameters()):,} bytes"
    )
    reloaded = load_adapter(copy.deepcopy(pretrained), folder).eval()
    lora_net.eval()
    with torch.no_grad():
        check("pretrained base + the saved adapter == the tuned model", reloaded(ids).logits, lora_net(ids).logits,
              atol=1e-5)  # fmt: skip
prompt = "ROMEO:" if source == "Tiny Shakespeare" else "LORA"
reply = generate(merge_lora(copy.deepcopy(lora_net)), prompt, tokenizer=tokenizer, max_new_tokens=48,
                 cpu_kernels=False).texts[0]  # fmt: skip
print(f"greedy continuation of {prompt!r} by the merged LoRA model: {reply!r}")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4), layout="constrained")
ax0.plot(pre_losses, color="gray")
ax0.set_title(f"pre-training the base on {source}")
ax0.set_xlabel("step")
ax0.set_ylabel("cross-entropy (nats per character)")
for label, losses in curves.items():
    ax1.plot(losses, label=f"{label} ({trainable_parameters(tuned[label]).trainable:,} trained)")
ax1.set_title("fine-tuning on SHOUTED text, from the same base")
ax1.set_xlabel("step")
ax1.legend(fontsize=8)
save(fig, args.out, "lora_finetune.png")
