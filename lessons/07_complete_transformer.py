"""Lesson 07: the complete Transformer: an encoder-decoder that translates, greedy and beam search by hand, alignment, BLEU.

Run:  python lessons/07_complete_transformer.py [--out DIR] [--quick]

Lessons 01-04 built attention and the encoder block; this one puts the whole model of the
paper's figure 1 together and makes it translate English into German (Multi30k's image captions):

1. **the model**: source and target tokens share one embedding (scaled by ``sqrt(d)``, plus the
   sinusoidal table); the encoder reads the whole source; the decoder reads the target so far
   with causal self-attention and looks at the encoder's output through **cross-attention**; a
   linear layer tied to the embedding turns each decoder state into next-token logits. Built here
   from ``glassformer.nn``'s blocks and checked against ``glassformer.models.transformer``;
2. **training** with teacher forcing: the decoder reads ``<s> y1 ... yn`` and must predict
   ``y1 ... yn </s>`` at every position at once (label-smoothed cross-entropy);
3. **decoding**, one token at a time: greedy (always the likeliest next token) and beam search
   (keep the ``K`` best partial translations; a finished one scores ``sum(log p) / length**alpha``,
   the length penalty, so that short outputs are not favoured just for having fewer factors),
   both by hand, checked against ``glassformer.generate``;
4. **what it looked at**: the cross-attention of a translated sentence, a soft word alignment;
5. **BLEU** by hand (clipped n-gram precisions, their geometric mean, the brevity penalty),
   checked against ``glassformer.translation.score_bleu`` and ``sacrebleu`` when installed.

Without the shared Multi30k data a generated task (words reversed and respelled) stands in.
``--quick`` trains 200 steps on the first 1,000 pairs (the translations are poor, the
checks the same); without it, a wider model trains 3,000 steps on 20,000 pairs (each step
costs about four times a quick one: the progress lines print the throughput).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, parse_args, save, section, show
from _translation import translation_data
from torch import Tensor, nn

from glassformer.generate import generate
from glassformer.metrics.bleu import corpus_bleu, tokenize_13a
from glassformer.models.transformer import Transformer, TransformerConfig
from glassformer.models.transformer.data import transformer_batch
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.positional import SinusoidalPositionalEncoding
from glassformer.translation import score_bleu, translate
from glassformer.viz.alignment import alignment_matrix, attention_kinds, plot_alignment, translation_attention
from glassformer.viz.attention import write_kinds_head_view_html

try:  # the reference BLEU implementation, for the check that names it
    import sacrebleu
except ImportError:
    sacrebleu = None

args = parse_args("07", __doc__)
torch.manual_seed(0)
QUICK = args.quick
N_TRAIN, N_VAL, STEPS, BATCH = (1_000, 30, 200, 24) if QUICK else (20_000, 200, 3_000, 64)

config = TransformerConfig(
    vocab_size=1024, tgt_vocab_size=1024, dim=64 if QUICK else 128, n_heads=4, n_layers=2, n_decoder_layers=2,
    ffn_dim=256 if QUICK else 512, dropout=0.1, max_seq_len=96, label_smoothing=0.1,
)  # fmt: skip
data = translation_data(config, N_TRAIN, N_VAL)
tok = data.tokenizer
PAD, BOS, EOS = config.pad_token_id, config.bos_token_id, config.eos_token_id
print(f"data: {data.name}: {len(data.train)} training pairs, one joint BPE of {tok.vocab_size} ids")
src_text, tgt_text = data.val[0]
print(f"  {src_text!r} -> {tgt_text!r}")
print(f"  source ids {tok.encode(src_text, add_special_tokens=True)}: each sentence ends with </s> = {EOS}")

# ---------------------------------------------------------------------------------------------
section("1. the encoder-decoder from glassformer.nn's blocks")


class EncoderDecoder(nn.Module):
    """Figure 1 of Vaswani et al. 2017: one shared embedding, a post-norm encoder and decoder, a tied output."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.scale = math.sqrt(c.dim)
        self.embed = nn.Embedding(c.vocab_size, c.dim)
        self.positions = SinusoidalPositionalEncoding(c.dim, c.max_seq_len, dropout=c.dropout)
        block = dict(ffn_dim=c.ffn_dim, activation="relu", norm="layernorm", norm_position="post",
                     dropout=c.dropout, attn_dropout=c.attn_dropout, norm_eps=c.norm_eps)  # fmt: skip
        self.encoder = TransformerStack(c.n_layers, c.dim, c.n_heads, **block)
        self.decoder = TransformerStack(c.n_decoder_layers, c.dim, c.n_heads, cross_attention=True, **block)
        self.out = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.out.weight = self.embed.weight  # the generator is the embedding matrix again
        nn.init.normal_(self.embed.weight, std=c.dim**-0.5)  # unit-size rows once scaled by sqrt(dim)

    def encode(self, src: Tensor, src_mask: Tensor) -> Tensor:
        """``(B, S)`` ids and 1/0 mask -> the memory ``(B, S, C)`` every decoder layer reads."""
        x = self.positions(self.embed(src) * self.scale)
        return self.encoder(x, mask=src_mask.bool()[:, None, None, :]).hidden

    def forward(self, src: Tensor, src_mask: Tensor, tgt: Tensor) -> Tensor:
        """Teacher forcing: logits ``(B, T, V)`` of the token after each of ``tgt``'s positions."""
        memory = self.encode(src, src_mask)
        y = self.positions(self.embed(tgt) * self.scale)
        hidden = self.decoder(
            y, is_causal=True, context=memory, context_mask=src_mask.bool()[:, None, None, :]
        )
        return self.out(hidden.hidden)


ours = EncoderDecoder(config)
library = Transformer(config)


def library_weights(model: EncoderDecoder) -> dict[str, Tensor]:
    """Our state dict under the library's names (its embedding is reachable as src and tgt)."""
    names = {
        "embed.weight": ["src_embed.weight", "tgt_embed.weight"],
        "out.weight": ["generator.proj.weight"],
    }
    return {new: t for old, t in model.state_dict().items() for new in names.get(old, [old])}


library.load_state_dict(library_weights(ours))
batch = transformer_batch(data.train[:4], config)
ours.eval(), library.eval()
with torch.no_grad():
    logits = ours(batch["src"], batch["src_attention_mask"], batch["tgt"])
    reference = library(
        batch["src"], batch["tgt"], batch["src_attention_mask"], batch["tgt_attention_mask"]
    ).logits
valid = batch["tgt_attention_mask"].bool()  # compare where a target token stands (not the padding)
check("our encoder-decoder's logits = glassformer.models.transformer.Transformer", logits[valid],
      reference[valid], atol=1e-4)  # fmt: skip
print(f"{sum(p.numel() for p in ours.parameters()):,} parameters (the embedding counted once)")

# ---------------------------------------------------------------------------------------------
section("2. training with teacher forcing")
optimizer = torch.optim.AdamW(ours.parameters(), lr=2e-3, betas=(0.9, 0.98), weight_decay=0.01)
warmup = STEPS // 10
losses = []
ours.train()
start = time.perf_counter()
generator = torch.Generator().manual_seed(0)
for step in range(STEPS):
    for group in optimizer.param_groups:  # linear warmup, then cosine decay to a tenth
        progress = max(0.0, (step - warmup) / max(1, STEPS - warmup))
        group["lr"] = 2e-3 * min((step + 1) / warmup, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    rows = torch.randint(len(data.train), (BATCH,), generator=generator).tolist()
    b = transformer_batch([data.train[i] for i in rows], config)
    logits = ours(b["src"], b["src_attention_mask"], b["tgt"])  # (B, T, V)
    loss = F.cross_entropy(
        logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100, label_smoothing=0.1
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ours.parameters(), 1.0)
    optimizer.step()
    losses.append(loss.item())
    if (step + 1) % (STEPS // 5) == 0:
        seen = (b["labels"] != -100).sum().item() * (step + 1)
        elapsed = time.perf_counter() - start
        print(
            f"step {step + 1:5d}  loss {loss.item():.3f}  ({elapsed:.1f} s, about {seen / elapsed:,.0f} target tok/s)"
        )
ours.eval()
library.load_state_dict(library_weights(ours))
library.eval()

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(losses, lw=0.8, label="label-smoothed cross-entropy")
ax.set(xlabel="step", ylabel="loss", title=f"training on {data.name}")
ax.legend()
save(fig, args.out, "loss.png")

# ---------------------------------------------------------------------------------------------
section("3. greedy decoding by hand")
# The source is encoded once; the decoder starts from <s> and, at every step, re-reads everything
# it produced so far (the library keeps a KV cache instead: the same numbers, far fewer FLOPs).
sources = [tok.encode(s, add_special_tokens=True) for s, _ in data.val[:3]]


def budget(source: list[int]) -> int:
    """How many tokens a translation may have: twice the source plus 10, within the positions."""
    return min(config.max_seq_len - 1, 2 * len(source) + 10)


@torch.no_grad()
def next_log_probs(src: list[int], prefixes: Tensor) -> Tensor:
    """``(K, V)`` log-probabilities of the token after each of ``K`` equally long decoder prefixes."""
    src_ids = torch.tensor([src] * prefixes.shape[0])
    logits = ours(src_ids, torch.ones_like(src_ids), prefixes)  # (K, T, V)
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def greedy_by_hand(src: list[int]) -> list[int]:
    out = [BOS]
    for _ in range(budget(src)):
        token = int(next_log_probs(src, torch.tensor([out]))[0].argmax())
        out.append(token)
        if token == EOS:
            break
    return out[1:]


for src in sources:
    mine = greedy_by_hand(src)
    theirs = generate(library, [src], strategy="greedy", max_new_tokens=budget(src), stop_token_ids=(EOS,),
                      pad_token_id=PAD, cpu_kernels=False).tokens[0]  # fmt: skip
    print(
        f"  {tok.decode(src, skip_special_tokens=True)!r}\n    -> {tok.decode(mine, skip_special_tokens=True)!r}"
    )
    check(f"greedy by hand = glassformer.generate greedy ({len(mine)} tokens)", torch.tensor(mine), torch.tensor(theirs),
          atol=0)  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("4. beam search by hand (K = 4, length penalty alpha = 1)")
# All live beams have the same length, so one decoder call scores them all. Every step: each
# beam's log-probabilities plus its running sum, the best 2K of the K x V candidates (so K can go
# on even if the best K all end); a candidate ranked among the top K that ends with </s> becomes a
# finished hypothesis scored sum / length**alpha; the best K that do not end are the new beams.
# Stop when K hypotheses are finished and the best beam, ended now, could not beat the worst.
K, ALPHA = 4, 1.0


def beam_by_hand(src: list[int], k: int = K, alpha: float = ALPHA) -> tuple[list[int], float]:
    beams: list[tuple[list[int], float]] = [([], 0.0)]  # (tokens so far, sum of log p)
    finished: list[tuple[float, list[int]]] = []  # (score, tokens), best first
    limit = budget(src)
    for step in range(limit):
        n = step + 1
        prefixes = torch.tensor([[BOS, *tokens] for tokens, _ in beams])
        log_probs = next_log_probs(src, prefixes)  # (beams, V)
        scores = log_probs + torch.tensor([s for _, s in beams])[:, None]
        best, index = scores.flatten().topk(2 * k)
        candidates = [(beams[i // scores.shape[1]][0] + [i % scores.shape[1]], float(v))
                      for v, i in zip(best.tolist(), index.tolist())]  # fmt: skip
        ends = [tokens[-1] == EOS or n == limit for tokens, _ in candidates]
        for (tokens, total), end in list(zip(candidates, ends))[:k]:
            if end:
                finished = sorted([*finished, (total / n**alpha, tokens)], key=lambda h: -h[0])[:k]
        beams = [c for c, end in zip(candidates, ends) if not end][:k]
        if n == limit or (len(finished) == k and beams[0][1] / n**alpha <= finished[-1][0]):
            break
    score, tokens = finished[0]
    return tokens, score


for src in sources:
    mine, mine_score = beam_by_hand(src)
    result = generate(library, [src], strategy="beam", num_beams=K, length_penalty=ALPHA, max_new_tokens=budget(src),
                      stop_token_ids=(EOS,), pad_token_id=PAD, cpu_kernels=False)  # fmt: skip
    print(f"  -> {tok.decode(mine, skip_special_tokens=True)!r}  (score {mine_score:.3f})")
    check("beam search by hand = glassformer.generate beam, tokens", torch.tensor(mine),
          torch.tensor(result.tokens[0]), atol=0)  # fmt: skip
    check("  and its length-penalised score", mine_score, result.scores[0], atol=1e-4)

# ---------------------------------------------------------------------------------------------
section("5. what the translation looked at: the cross-attention alignment")
sentence = data.val[1][0]
found = translation_attention(library, tok, sentence, num_beams=K, cpu_kernels=False)
print(f"  {sentence!r} -> {found.translation!r}")
last = alignment_matrix(found.cross)  # (target, source): the last layer, mean over heads
show("last decoder layer's cross-attention, mean of the heads (rows: target tokens)", last, decimals=2)
path = plot_alignment(found, args.out / "alignment.png", per_head=True,
                      title=f"{sentence} -> {found.translation}"[:110])  # fmt: skip
print(f"saved {path} (the mean of the heads, then each head)")
page = write_kinds_head_view_html(attention_kinds(found), args.out / "head_view.html", title=sentence)
print(f"the interactive head view (encoder, decoder and cross heads): {page}")

# ---------------------------------------------------------------------------------------------
section("6. BLEU by hand")
# BLEU compares n-grams (n = 1..4) of the whole output with the references': each n-gram counts
# at most as often as the reference has it (clipping), p_n = matches / n-grams produced; the score
# is their geometric mean times a brevity penalty exp(1 - r / c) when the output (c words) is
# shorter than the references (r words), x 100. A p_n of zero is smoothed by halving ("exp").
# Words are split by the 13a rules (the WMT scoring script's), so the score compares with papers.
if data.on_multi30k:
    report = score_bleu(library, tok, split="val", limit=N_VAL, num_beams=K, cpu_kernels=False)
    hypotheses, references, library_bleu = report.hypotheses, report.references, report.bleu
    print(report)
else:
    references = [t for _, t in data.val]
    hypotheses = translate(library, tok, [s for s, _ in data.val], num_beams=K, cpu_kernels=False)
    library_bleu = corpus_bleu(hypotheses, [references])
scorer = "glassformer.translation.score_bleu" if data.on_multi30k else "glassformer.metrics.corpus_bleu"


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def bleu_by_hand(hyps: list[str], refs: list[str]) -> tuple[float, list[float], float]:
    matches, totals, c, r = [0] * 4, [0] * 4, 0, 0
    for hyp, ref in zip(hyps, refs):
        h, t = tokenize_13a(hyp).split(), tokenize_13a(ref).split()
        c, r = c + len(h), r + len(t)
        for n in range(1, 5):
            produced, allowed = ngrams(h, n), ngrams(t, n)
            matches[n - 1] += sum(min(count, allowed[g]) for g, count in produced.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if c >= r else math.exp(1 - r / c) if c else 0.0
    if not any(matches):  # nothing in common at all: 0, not a smoothed score
        return 0.0, [0.0] * 4, bp
    precisions, halving = [], 1.0
    for m, total in zip(matches, totals):
        if m == 0:
            halving *= 2
        precisions.append(100.0 * (m if m else 1 / halving) / total if total else 0.0)
    score = bp * math.exp(sum(math.log(p) for p in precisions) / 4) if min(precisions) > 0 else 0.0
    return score, precisions, bp


score, precisions, bp = bleu_by_hand(hypotheses, references)
print(f"  p1..p4 = {', '.join(f'{p:.1f}' for p in precisions)}  BP = {bp:.3f}  BLEU = {score:.2f}")
print(f"  e.g. {hypotheses[0]!r}\n   vs {references[0]!r}")
check(f"BLEU by hand = {scorer}", score, library_bleu.score, atol=1e-9)
check("  and its n-gram precisions", precisions, list(library_bleu.precisions), atol=1e-9)
if sacrebleu is not None:
    check("BLEU by hand = sacrebleu.corpus_bleu", score, sacrebleu.corpus_bleu(hypotheses, [references]).score,
          atol=1e-6)  # fmt: skip

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar([f"{n}-grams" for n in range(1, 5)], precisions, color="tab:blue")
ax.set(ylabel="clipped precision (%)", title=f"BLEU {score:.2f} = BP {bp:.2f} x geometric mean")
save(fig, args.out, "bleu.png")
