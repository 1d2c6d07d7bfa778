"""Lesson 05: a full BERT-style encoder, its two classic heads, and three ways to pool a sentence.

Run:  python lessons/05_full_encoder.py [--out DIR] [--quick]

Lesson 04 built one encoder block. A whole encoder (BERT, Devlin et al. 2018) is only a little more:

1. **embeddings**: ``LayerNorm(word[id] + position[t] + segment[s])``, one vector per token;
2. a **stack** of post-norm blocks, every one the same shape; a padding mask says which keys are
   real, and every layer reuses it;
3. a **head**, chosen by the task. *Sequence classification* turns the whole text into one
   vector and classifies it; *token classification* (tagging: part of speech, named entities)
   classifies every token's own vector.

Everything the encoder computes is bidirectional: each token sees the tokens after it too. That is
what tagging needs when a word's role depends on what follows. This lesson's small generated task
makes that concrete: "orange" is a COLOUR in "the orange kite" and a fruit (OTHER) in "sees an
orange"; "one" is a NUMBER in "one red box" and a pronoun (OTHER) in "the red one".

The lesson assembles the encoder from ``glassformer.nn`` blocks, copies the weights of
``glassformer.models.bert.Bert`` into it and checks the two agree, checks both heads by hand, trains
the token head on the generated task, and compares three ways of pooling a sentence into one
vector: the ``[CLS]`` vector, the mean of the tokens, and a learned query that attends over them.
"""

from __future__ import annotations

import math
import random
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, parse_args, save, section
from torch import Tensor, nn

from glassformer.models.bert import IGNORE_INDEX, Bert, BertConfig, mean_pool
from glassformer.nn.attention import attention
from glassformer.nn.blocks import TransformerBlock
from glassformer.nn.norms import LayerNorm

args = parse_args("05", __doc__)
torch.manual_seed(0)

# ---------------------------------------------------------------------------------------------
section("1. A small tagging task, generated from a seed")
# A sentence is "PHRASE VERB PHRASE", a phrase "DET [NUMBER] [COLOUR] NOUN". Every token gets a tag:
# NUMBER, COLOUR or OTHER. "orange" is both a colour and a noun, and "one" both a number and a
# pronoun noun ("the red one"), so these two words can only be tagged by looking at their neighbours.
DETS = ["the", "a", "some", "every"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven"]
COLOURS = ["red", "blue", "green", "yellow", "black", "orange"]
NOUNS = ["cat", "dog", "car", "ball", "box", "kite", "orange", "hat"]
VERBS = ["sees", "likes", "takes", "paints", "finds", "hides"]
TAGS = ["OTHER", "NUMBER", "COLOUR"]
AMBIGUOUS = {"orange", "one"}
SPECIALS = ["[PAD]", "[CLS]", "[SEP]"]
VOCAB = SPECIALS + sorted(set(DETS + NUMBERS + COLOURS + NOUNS + VERBS))
ID = {w: i for i, w in enumerate(VOCAB)}
PAD, CLS, SEP = 0, 1, 2


def phrase(rng: random.Random) -> list[tuple[str, str]]:
    """One noun phrase as (word, tag) pairs; "one" as a noun needs a colour before it."""
    words = [(rng.choice(DETS), "OTHER")]
    if rng.random() < 0.4:
        words.append((rng.choice(NUMBERS), "NUMBER"))
    has_colour = rng.random() < 0.3
    if has_colour:
        words.append((rng.choice(COLOURS), "COLOUR"))
    noun = "one" if has_colour and rng.random() < 0.3 else rng.choice(NOUNS)
    return words + [(noun, "OTHER")]


def sentence(rng: random.Random) -> list[tuple[str, str]]:
    return phrase(rng) + [(rng.choice(VERBS), "OTHER")] + phrase(rng)


def encode(sentences: list[list[tuple[str, str]]]) -> dict[str, Tensor]:
    """``[CLS] words [SEP]``, right-padded; tag labels with -100 on [CLS], [SEP] and padding;
    and the sentence label for section 5: 1 when an "orange" in it is tagged COLOUR."""
    width = max(len(s) for s in sentences) + 2
    ids = torch.full((len(sentences), width), PAD)
    tags = torch.full((len(sentences), width), IGNORE_INDEX)
    for row, s in enumerate(sentences):
        ids[row, : len(s) + 2] = torch.tensor([CLS] + [ID[w] for w, _ in s] + [SEP])
        tags[row, 1 : len(s) + 1] = torch.tensor([TAGS.index(t) for _, t in s])
    return dict(
        input_ids=ids,
        attention_mask=(ids != PAD).long(),
        tags=tags,
        orange_colour=((ids == ID["orange"]) & (tags == TAGS.index("COLOUR"))).any(1).long(),
    )


rng = random.Random(0)
n_train = 2000 if args.quick else 8000
train_sentences = [sentence(rng) for _ in range(n_train)]
val_sentences = [sentence(rng) for _ in range(500)]
train, val = encode(train_sentences), encode(val_sentences)
for s in val_sentences[:3]:
    print("  ".join(f"{w}/{t[0]}" for w, t in s))
print(f"{n_train} training and {len(val_sentences)} validation sentences, vocabulary {len(VOCAB)}")

# ---------------------------------------------------------------------------------------------
section("2. The encoder from glassformer.nn blocks, against glassformer's BERT")
# Width 32, 2 layers, 4 heads: tiny, so that everything below trains in seconds on one core.
config = BertConfig(
    vocab_size=len(VOCAB),
    dim=32,
    n_layers=2,
    n_heads=4,
    ffn_dim=64,
    max_seq_len=32,
    dropout=0.0,
    attn_dropout=0.0,
    classifier_dropout=0.0,
    head="sequence",
    num_labels=2,
    attn_backend="eager",
)


class Encoder(nn.Module):
    """Embeddings, then post-norm ``TransformerBlock``s: BERT's encoder, nothing else."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.dim)
        self.position = nn.Embedding(c.max_seq_len, c.dim)
        self.segment = nn.Embedding(c.type_vocab_size, c.dim)
        self.norm = LayerNorm(c.dim, eps=c.norm_eps)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                c.dim,
                c.n_heads,
                ffn_dim=c.ffn_dim,
                activation="gelu",
                norm_eps=c.norm_eps,
                norm_position="post",
                backend="eager",
            )
            for _ in range(c.n_layers)
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1])
        # one segment here (segment A, id 0); a sentence pair would pass 0s and 1s
        x = self.norm(self.word(input_ids) + self.position(positions) + self.segment.weight[0])  # (B, T, C)
        # (B, 1, 1, T): True where the key is a real token, the same for every query and head
        keys = attention_mask[:, None, None, :].bool()
        for block in self.blocks:
            x = block(x, mask=keys).hidden
        return x  # (B, T, C)


def bert_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename BERT's encoder weights to ours: the tensors are the same, only the names differ."""
    rename = {
        "embeddings.word.": "word.",
        "embeddings.position.": "position.",
        "embeddings.token_type.": "segment.",
        "embeddings.norm.": "norm.",
        "encoder.layers.": "blocks.",
    }
    out = {}
    for name, tensor in state.items():
        for theirs, ours in rename.items():
            if name.startswith(theirs):
                out[ours + name[len(theirs) :]] = tensor
    return out


bert = Bert(config).eval()
with torch.no_grad():  # norms away from 1 and 0, so the check tests their weights too
    for name, p in bert.named_parameters():
        if "norm" in name:
            p.add_(0.2 * torch.randn_like(p))
encoder = Encoder(config).eval()
encoder.load_state_dict(bert_to_ours(bert.state_dict()))
batch = {k: v[:6] for k, v in val.items()}
with torch.no_grad():
    hidden = encoder(batch["input_ids"], batch["attention_mask"])
    library_hidden, _ = bert.encode(batch["input_ids"], batch["attention_mask"])
check("encoder from glassformer.nn blocks == Bert.encode (padded batch)", hidden, library_hidden, atol=1e-5)

# ---------------------------------------------------------------------------------------------
section("3. The two heads by hand")
# Sequence classification (BERT): the [CLS] vector, through the "pooler" (dense + tanh, trained in
# pretraining by next-sentence prediction), then a linear classifier.
with torch.no_grad():
    pooled = torch.tanh(hidden[:, 0] @ bert.pooler.weight.T + bert.pooler.bias)  # (B, C)
    sequence_logits = pooled @ bert.classifier.weight.T + bert.classifier.bias  # (B, 2)
    check(
        "sequence head: classifier(tanh(pooler(h[CLS]))) == Bert(head='sequence')",
        sequence_logits,
        bert(batch["input_ids"], batch["attention_mask"]).logits,
        atol=1e-5,
    )
# Token classification: the same linear classifier on every token's vector; the loss skips the
# positions labelled -100 ([CLS], [SEP], padding), so they neither count nor need a tag.
token_bert = Bert(config.replace(head="token", num_labels=len(TAGS))).eval()
token_bert.load_state_dict(
    {k: v for k, v in bert.state_dict().items() if not k.startswith("classifier")}, strict=False
)
with torch.no_grad():
    token_logits = hidden @ token_bert.classifier.weight.T + token_bert.classifier.bias  # (B, T, 3)
    out = token_bert(batch["input_ids"], batch["attention_mask"], labels=batch["tags"])
    keep = batch["tags"] != IGNORE_INDEX
    loss = F.cross_entropy(token_logits[keep], batch["tags"][keep])
check(
    "token head: classifier(h) at every position == Bert(head='token')", token_logits, out.logits, atol=1e-5
)
check("token loss over the tagged positions only", loss, out.loss, atol=1e-6)

# ---------------------------------------------------------------------------------------------
section("4. Training the token head on the tagging task")


def batches(data: dict[str, Tensor], size: int, steps: int, seed: int):
    """``steps`` random batches, cut to their longest row (short sentences need little padding)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rows = torch.randint(0, len(data["input_ids"]), (size,), generator=g)
        width = int(data["attention_mask"][rows].sum(1).max())
        yield {k: (v[rows, :width] if v.dim() == 2 else v[rows]) for k, v in data.items()}


def tagging_accuracy(model: Bert, data: dict[str, Tensor]) -> tuple[float, float]:
    """Accuracy over all tagged tokens, and over the ambiguous words ("orange", "one") alone."""
    with torch.no_grad():
        predicted = model(data["input_ids"], data["attention_mask"]).logits.argmax(-1)
    tagged = data["tags"] != IGNORE_INDEX
    ambiguous = torch.isin(data["input_ids"], torch.tensor([ID[w] for w in AMBIGUOUS])) & tagged
    right = predicted == data["tags"]
    return right[tagged].float().mean().item(), right[ambiguous].float().mean().item()


# What one word tells on its own: tag each word with its most frequent tag in training. This
# gets every unambiguous word right and each ambiguous word only as often as its commoner reading.
counts: dict[str, dict[str, int]] = {}
for s in train_sentences:
    for w, t in s:
        counts.setdefault(w, dict.fromkeys(TAGS, 0))[t] += 1
by_word = [[max(counts[w], key=counts[w].get) == t for w, t in s] for s in val_sentences]
word_only = sum(map(sum, by_word)) / sum(map(len, by_word))
word_only_amb = [ok for s, oks in zip(val_sentences, by_word) for (w, _), ok in zip(s, oks) if w in AMBIGUOUS]
word_only_amb_acc = sum(word_only_amb) / len(word_only_amb)
print(
    f"tagging each word by its commonest tag: {word_only:.1%} of all tokens, "
    f"{word_only_amb_acc:.1%} of the ambiguous ones"
)

torch.manual_seed(1)
tagger = Bert(config.replace(head="token", num_labels=len(TAGS)))
optimizer = torch.optim.AdamW(tagger.parameters(), lr=3e-3)
steps, every = (150, 15) if args.quick else (600, 30)
curve: list[tuple[int, float, float]] = []
start = time.perf_counter()
for step, b in enumerate(batches(train, 32, steps, seed=0), 1):
    tagger.train()
    loss = tagger(b["input_ids"], b["attention_mask"], labels=b["tags"]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % every == 0:
        tagger.eval()
        curve.append((step, *tagging_accuracy(tagger, val)))
        if step % (every * 5) == 0:
            print(
                f"step {step:4d}  loss {loss.item():.3f}  val accuracy {curve[-1][1]:.1%} "
                f"(ambiguous words {curve[-1][2]:.1%})  {step * 32 / (time.perf_counter() - start):.0f} sentences/s"
            )
print(
    f"the encoder reads the neighbours: ambiguous words {curve[-1][2]:.1%} vs {word_only_amb_acc:.1%} from the word alone"
)
example = val_sentences[3]
with torch.no_grad():
    guess = tagger(encode([example])["input_ids"]).logits[0, 1:-1].argmax(-1)
print("tagged:", "  ".join(f"{w}/{TAGS[g][0]}" for (w, _), g in zip(example, guess.tolist())))

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
xs = [c[0] for c in curve]
ax.plot(xs, [c[1] for c in curve], "o-", label="all tokens")
ax.plot(xs, [c[2] for c in curve], "s-", label='ambiguous words ("orange", "one")')
ax.axhline(word_only, color="C0", ls=":", label="all tokens, commonest tag per word")
ax.axhline(word_only_amb_acc, color="C1", ls=":", label="ambiguous, commonest tag per word")
ax.set(
    xlabel="training step",
    ylabel="validation accuracy",
    ylim=(0, 1.02),
    title="token tagging (NUMBER / COLOUR / OTHER) with a 2-layer encoder",
)
ax.legend(loc="lower right", fontsize=8)
save(fig, args.out, "tagging.png")

# ---------------------------------------------------------------------------------------------
section("5. Pooling: [CLS] vs the mean vs a learned query")
# A sentence classifier needs one vector per sentence. Three ways to get it from (B, T, C):
# * [CLS]: the first token's vector; the model has to learn to gather everything into it;
# * mean: the average of the real tokens' vectors (sentence-transformers' choice);
# * attention pooling: a learned query vector q scores every token, softmax(h q / sqrt(C)) over
#   the real tokens gives weights, and the pooled vector is the weighted sum: one head of
#   attention with a single query, so the model can pick out the tokens that matter.
# The task: each sentence holds one "orange"; is it the colour or the fruit? Half are each. The
# answer sits in one token and its neighbour, the rest of the sentence is noise.


def orange_sentence(rng: random.Random, as_colour: bool) -> list[tuple[str, str]]:
    """A generated sentence with exactly one "orange", used as a colour or not (rejection sampling)."""
    while True:
        s = sentence(rng)
        oranges = [t for w, t in s if w == "orange"]
        if len(oranges) == 1 and (oranges[0] == "COLOUR") == as_colour:
            return s


pool_train = encode([orange_sentence(rng, i % 2 == 0) for i in range(n_train)])
pool_val_sentences = [orange_sentence(rng, i % 2 == 0) for i in range(500)]
pool_val = encode(pool_val_sentences)


class Pooling(nn.Module):
    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        self.kind = kind
        self.query = nn.Parameter(torch.randn(dim) / math.sqrt(dim)) if kind == "attention" else None

    def weights(self, h: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, T)`` attention-pooling weights; padding gets exactly 0."""
        scores = h @ self.query / math.sqrt(h.shape[-1])  # (B, T)
        return torch.softmax(scores.masked_fill(attention_mask == 0, float("-inf")), dim=-1)

    def forward(self, h: Tensor, attention_mask: Tensor) -> Tensor:  # (B, T, C) -> (B, C)
        if self.kind == "cls":
            return h[:, 0]
        if self.kind == "mean":
            m = attention_mask[..., None].to(h.dtype)
            return (h * m).sum(1) / m.sum(1)
        return (self.weights(h, attention_mask)[..., None] * h).sum(1)


class SentenceClassifier(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.pool = Pooling(kind, config.dim)
        self.head = nn.Linear(config.dim, 2)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.head(self.pool(self.encoder(input_ids, attention_mask), attention_mask))  # (B, 2)


# The two hand poolers against the library: mean pooling vs glassformer's mean_pool, attention
# pooling vs glassformer.nn.attention with one query per sentence (B, H=1, Tq=1, C).
probe = Pooling("attention", config.dim)
with torch.no_grad():
    mask = batch["attention_mask"]
    check(
        "mean pooling == glassformer's mean_pool(normalize=False)",
        Pooling("mean", config.dim)(hidden, mask),
        mean_pool(hidden, mask, normalize=False),
        atol=1e-6,
    )
    q = probe.query.expand(len(hidden), 1, 1, -1)  # (B, 1, 1, C)
    pooled_lib, weights_lib = attention(
        q, hidden[:, None], hidden[:, None], mask=mask[:, None, None, :].bool(), return_weights=True
    )
    check(
        "attention pooling == glassformer.nn attention with one learned query",
        probe(hidden, mask),
        pooled_lib[:, 0, 0],
        atol=1e-6,
    )
    check("its weights", probe.weights(hidden, mask), weights_lib[:, 0, 0], atol=1e-6)

pool_steps, pool_every = (150, 15) if args.quick else (500, 25)
results: dict[str, list[tuple[int, float]]] = {}
models: dict[str, SentenceClassifier] = {}
for kind in ("cls", "mean", "attention"):
    torch.manual_seed(2)  # the same encoder and head initialisation for all three
    model = SentenceClassifier(kind)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    results[kind] = []
    for step, b in enumerate(batches(pool_train, 32, pool_steps, seed=1), 1):  # the same batches too
        model.train()
        loss = F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["orange_colour"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % pool_every == 0:
            model.eval()
            with torch.no_grad():
                right = (
                    model(pool_val["input_ids"], pool_val["attention_mask"]).argmax(-1)
                    == pool_val["orange_colour"]
                )
            results[kind].append((step, right.float().mean().item()))
    models[kind] = model
    print(
        f"{kind:>9} pooling: validation accuracy {results[kind][-1][1]:.1%} after {pool_steps} steps "
        f"(best {max(a for _, a in results[kind]):.1%})"
    )

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for kind, points in results.items():
    ax.plot([s for s, _ in points], [a for _, a in points], "o-", label=f"{kind} pooling")
ax.set(
    xlabel="training step",
    ylabel="validation accuracy",
    ylim=(0.4, 1.02),
    title='"orange": colour or fruit? the same encoder, three poolings',
)
ax.legend(loc="lower right")
save(fig, args.out, "pooling.png")

# Where the learned query looks. Attention pooling *can* single out a token, but it only has to if
# the other tokens do not already carry the answer; after two layers of self-attention they may.
# How far the weights are from uniform tells which happened (the bars, and the number below).
attn_model = models["attention"].eval()
with torch.no_grad():
    w_all = attn_model.pool.weights(
        attn_model.encoder(pool_val["input_ids"], pool_val["attention_mask"]), pool_val["attention_mask"]
    )
uniform = 1 / pool_val["attention_mask"].sum(1)
print(
    f"largest pooling weight per sentence: {(w_all.max(1).values / uniform).mean():.2f}x the uniform 1/n on average"
)
examples = [0, 1, 2, 3]
fig, axes = plt.subplots(len(examples), 1, figsize=(8, 1.9 * len(examples)), layout="constrained")
for ax, row in zip(axes, examples):
    ids, mask = pool_val["input_ids"][row : row + 1], pool_val["attention_mask"][row : row + 1]
    n = int(mask.sum())
    with torch.no_grad():
        w = attn_model.pool.weights(attn_model.encoder(ids, mask), mask)[0, :n]
    words = [VOCAB[i] for i in ids[0, :n].tolist()]
    tags = ["OTHER"] + [t for _, t in pool_val_sentences[row]] + ["OTHER"]
    colours = ["C3" if t == "COLOUR" else "C2" if t == "NUMBER" else "C7" for t in tags]
    ax.bar(range(n), w.numpy(), color=colours)
    ax.set_xticks(range(n), words, fontsize=8)
    ax.set_ylabel("weight")
axes[0].set_title("attention pooling weights (red: COLOUR, green: NUMBER, grey: OTHER)")
save(fig, args.out, "attention_pooling.png")
print(f"\nLesson 05 done; figures in {args.out}")
