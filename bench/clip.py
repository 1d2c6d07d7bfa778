"""CLIP on synthetic shapes: retrieval both ways, held-out compositions, batch size, zero-shot vs probe.

The ``clip-shapes`` preset (8.0M parameters) trains through the one engine
(``glassformer.train.Trainer``) on pictures of one or two coloured shapes with captions ("a small
red circle above a large blue square", paraphrased). Four compositions ("green triangle", "red
star", "blue circle", "yellow square") never appear in training; the ``test_heldout`` split shows
one in every picture. The loss's caption ids are composition ids, so paraphrases of one picture
are not pushed apart. A run's budget is wall time: the engine's own step time, measured first
(fp32 and bf16, the faster one kept), sets ``max_steps`` and so the cosine schedule.

Sections (``--sections``, comma-separated; default all, in this order). Each is stored in the JSON
as it finishes and skipped when the JSON already holds it (``--redo`` runs them again):

- ``train``: the main run, ``--minutes`` of wall time at batch ``--batch-size``; loss and learned
  temperature ``exp(logit_scale)`` over training (the loss must leave ``ln(batch)``, chance);
- ``retrieval``: text->image and image->text recall@1/5/10 on ``--n-test`` seen and held-out test
  pairs, chance beside (a hit: a retrieved item with the query's caption);
- ``zeroshot``: the shape of one-object test pictures by prompt (the caption style, averaged over
  colours and sizes) against a logistic-regression probe on the frozen image features;
- ``pictures``: the similarity matrix of a small batch and text->image top-5 grids;
- ``batch``: batch 32 vs 128 vs 512 at ``--batch-minutes`` each: recall@1 seen and held-out;
- ``fashion``: a ``--fashion-minutes`` CLIP run on Fashion-MNIST with templated captions, then
  zero-shot ("a photo of a {class}") against the linear probe on the 10,000 test images.

Run (``--quick`` checks the plumbing in a few seconds a section; its numbers mean nothing)::

    .venv/bin/python bench/clip.py                 # ~70 min on 2 cores: train 40, batch 3x5, fashion 5
    .venv/bin/python bench/clip.py --sections retrieval,pictures --redo   # re-score the trained model

Writes ``bench/results/clip.json`` (``--quick``: ``out/bench_clip_quick/clip_quick.json``) with
``t2i_recall_at_1_seen``, ``t2i_recall_at_1_heldout``, ``i2t_recall_at_1_seen``,
``i2t_recall_at_1_heldout``, ``chance_recall_at_1`` (of the seen set; the held-out one is beside it
in the table), ``train_minutes``, the tables, the settings and the machine before and after; PNGs
``clip_training.png``, ``clip_similarity.png``, ``clip_retrieval_seen.png``, ``clip_retrieval_heldout.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Python puts this script's folder first on sys.path, where bench/tokenizers.py would shadow the
# tokenizers package transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from glassformer.data.images import FASHION_MNIST_HINT, ImageDataError  # noqa: E402
from glassformer.data.shapes import (  # noqa: E402
    COLOURS,
    FASHION_CAPTION_NAMES,
    SHAPES,
    SIZES,
    CaptionedImageData,
    PairedImages,
    ShapesConfig,
    fashion_captions,
    shapes_split,
    with_article,
)
from glassformer.metrics import retrieval_table  # noqa: E402
from glassformer.models.clip import CLIP  # noqa: E402
from glassformer.models.clip.config import CLIPConfig, clip_shapes  # noqa: E402
from glassformer.models.clip.data import caption_tokenizer  # noqa: E402
from glassformer.train import TrainConfig, Trainer, latest_checkpoint  # noqa: E402
from glassformer.train.budget import seconds_per_step, steps_for_minutes  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.weights import read_safetensors  # noqa: E402
from glassformer.viz.clip import plot_similarity_matrix  # noqa: E402
from glassformer.viz.figures import pyplot, save_figure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 5, 10)
BATCH_SIZES = (32, 128, 512)
QUICK_BATCH_SIZES = (8, 16, 32)  # --quick: the same plumbing in seconds
ENCODE_BATCH = 250


# --- data -------------------------------------------------------------------------------------------


def shapes_sets(args: argparse.Namespace, config: CLIPConfig) -> dict[str, Any]:
    """The three splits (``PairedImages`` with structure) and the training data set (composition ids)."""
    shapes = ShapesConfig(image_size=config.vision.image_size)
    splits = {
        s: shapes_split(s, n, config=shapes, show_progress=not args.quick)
        for s, n in (("train", args.n_train), ("test_seen", args.n_test), ("test_heldout", args.n_test))
    }
    tokenizer = caption_tokenizer(config)
    train = splits["train"].dataset(ids="composition", tokenizer=tokenizer, pad_id=config.pad_token_id)
    evals = splits["test_seen"].dataset(ids="composition", tokenizer=tokenizer, pad_id=config.pad_token_id)
    return {"splits": splits, "train": train, "eval": evals, "tokenizer": tokenizer}


# --- training through the engine --------------------------------------------------------------------


def calibrate(config: CLIPConfig, data: CaptionedImageData, batch: int, work: Path, steps: int,
              precisions: tuple[str, ...], rounds: int = 1) -> dict[str, float]:  # fmt: skip
    """Seconds per optimizer step of the engine at each precision (a throwaway model each); with
    several ``rounds`` the precisions take turns and each keeps its best, so that both are timed
    across the same moments of a machine that others share."""
    torch.manual_seed(0)
    model = CLIP(config)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for p in precisions:
            best[p] = min(
                best.get(p, math.inf), seconds_per_step(model, data, batch, work, steps=steps, precision=p)
            )
    return best


def train_clip(config: CLIPConfig, train: CaptionedImageData, evals: CaptionedImageData, out: Path,
               minutes: float, batch: int, precision: str, per_step: float, lr: float, least: int = 20) -> dict[str, Any]:  # fmt: skip
    """Train a fresh model for ``minutes`` of wall time; return it with the run's record."""
    torch.manual_seed(0)
    model = CLIP(config)
    max_steps = steps_for_minutes(
        minutes, per_step, reserve=2 * len(evals) / batch * per_step / 3, at_least=least
    )
    shutil.rmtree(out, ignore_errors=True)  # a budgeted run starts fresh: a resumed one would miss its budget
    cfg = TrainConfig(
        out_dir=str(out), seed=0, max_steps=max_steps, batch_size=batch, lr=lr, weight_decay=0.1,
        betas=(0.9, 0.98), eps=1e-6, grad_clip=1.0, schedule="cosine", warmup_steps=max(1, max_steps // 20),
        min_lr_ratio=0.02, eval_interval=max(1, max_steps // 2), eval_batches=0, save_interval=max_steps,
        keep_last=1, log_interval=max(1, min(25, max_steps // 20)), plot=False, precision=precision,
    )  # fmt: skip
    start = time.perf_counter()
    Trainer(model, cfg, train, evals).fit()
    took = (time.perf_counter() - start) / 60
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    curve = [
        (r["step"], r["loss"], r["logit_scale"])
        for r in records
        if r.get("kind") == "train" and "logit_scale" in r
    ]
    return {"model": model.eval(), "max_steps": max_steps, "train_minutes": round(took, 2), "curve": curve,
            "eval_loss": [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
            "pairs_seen": max_steps * batch, "epochs": round(max_steps * batch / len(train), 2)}  # fmt: skip


def load_trained(work: Path, config: CLIPConfig) -> CLIP:
    folder = latest_checkpoint(work / "main" / "checkpoints")
    if folder is None:
        raise SystemExit(
            f"no trained model under {work / 'main'}: run the train section first (--sections train)"
        )
    model = CLIP(config)
    model.load_state_dict(read_safetensors(folder / "model.safetensors"))
    return model.eval()


# --- features and scores ----------------------------------------------------------------------------


@torch.no_grad()
def embed(model: CLIP, pairs: PairedImages, tokenizer: Any, config: CLIPConfig) -> dict[str, torch.Tensor]:
    """Unit image and text embeddings of every pair, and the image tower's pooled (probe) features."""
    data = pairs.dataset(image_size=config.vision.image_size, tokenizer=tokenizer, pad_id=config.pad_token_id)
    images, texts, pooled = [], [], []
    for first in range(0, len(data), ENCODE_BATCH):
        rows = range(first, min(first + ENCODE_BATCH, len(data)))
        pixels = data.pixels(slice(rows.start, rows.stop))
        hidden = model.vision.pool(model.vision.encode(pixels).hidden)  # (B, C)
        pooled.append(hidden)
        images.append(F.normalize(model.visual_projection(hidden), dim=-1))
        texts.append(model.encode_text(**data.tokenize([data.captions[i] for i in rows])))
    return {"image": torch.cat(images), "text": torch.cat(texts), "pooled": torch.cat(pooled)}


@torch.no_grad()
def embed_texts(model: CLIP, texts: list[str], tokenizer: Any, config: CLIPConfig) -> torch.Tensor:
    """Unit embeddings of free texts (prompts), padded with the model's pad id."""
    rows = [list(tokenizer(t)) for t in texts]
    ids = torch.full((len(rows), max(map(len, rows))), config.pad_token_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return model.encode_text(ids, mask)


def recall_rows(model: CLIP, sets: dict[str, Any], config: CLIPConfig) -> dict[str, Any]:
    """The retrieval table of the seen and the held-out test sets (caption ids: canonical captions)."""
    out = {}
    for name in ("test_seen", "test_heldout"):
        split = sets["splits"][name]
        e = embed(model, split, sets["tokenizer"], config)
        table = retrieval_table(e["image"], e["text"], split.caption_ids, KS)
        out[name.removeprefix("test_")] = {
            way: {f"R@{k}": round(v, 4) for k, v in row.items()} for way, row in table.items()
        }
        out[name.removeprefix("test_")]["distinct_captions"] = int(split.caption_ids.unique().numel())
    return out


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 classes: int, steps: int = 300) -> float:  # fmt: skip
    """Test accuracy of a logistic regression (L-BFGS, small L2) on standardised frozen features."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    layer = torch.nn.Linear(xs.shape[1], classes)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(layer(xs), train_y) + 1e-4 * layer.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (layer(xt).argmax(1) == test_y).float().mean().item()


def zero_shot(image_embeds: torch.Tensor, class_embeds: torch.Tensor, labels: torch.Tensor) -> float:
    return (image_embeds @ class_embeds.T).argmax(1).eq(labels).float().mean().item()


# --- sections ---------------------------------------------------------------------------------------


def section_train(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    config, sets = ctx["config"], ctx["sets"]()
    timing = calibrate(
        config, sets["train"], args.batch_size, work, args.calibrate_steps, ("fp32", "bf16"), rounds=2
    )
    precision = min(timing, key=timing.get)
    print(f"calibration: fp32 {timing['fp32']:.3f} s/step, bf16 {timing['bf16']:.3f} s/step -> {precision}")
    run = train_clip(config, sets["train"], sets["eval"], work / "main", args.minutes, args.batch_size, precision,
                     timing[precision], args.lr, args.least_steps)  # fmt: skip
    ctx["model"] = run.pop("model")
    plot_training(run["curve"], args.batch_size, figures(args) / "clip_training.png")
    last = run["curve"][-1]
    print(
        f"train: {run['max_steps']} steps, {run['train_minutes']:.1f} min, loss {last[1]:.3f} "
        f"(ln {args.batch_size} = {math.log(args.batch_size):.3f}), temperature {last[2]:.1f}"
    )
    return {"train_minutes": run["train_minutes"],
            "train": {**run, "batch_size": args.batch_size, "precision": precision, "lr": args.lr,
                      "seconds_per_step": {k: round(v, 4) for k, v in timing.items()}, "n_train": args.n_train,
                      "ln_batch": math.log(args.batch_size), "final_loss": last[1], "final_temperature": last[2],
                      "parameters": sum(p.numel() for p in ctx["model"].parameters())}}  # fmt: skip


def trained(work: Path, ctx: dict[str, Any]) -> CLIP:
    if "model" not in ctx:
        ctx["model"] = load_trained(work, ctx["config"])
    return ctx["model"]


def section_retrieval(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    table = recall_rows(trained(work, ctx), ctx["sets"](), ctx["config"])
    for name, rows in table.items():
        for way in ("t2i", "i2t", "chance"):
            print(f"retrieval {name:8s} {way:6s} " + "  ".join(f"{k} {v:.3f}" for k, v in rows[way].items()))
    return {"t2i_recall_at_1_seen": table["seen"]["t2i"]["R@1"], "t2i_recall_at_1_heldout": table["heldout"]["t2i"]["R@1"],
            "i2t_recall_at_1_seen": table["seen"]["i2t"]["R@1"], "i2t_recall_at_1_heldout": table["heldout"]["i2t"]["R@1"],
            "chance_recall_at_1": table["seen"]["chance"]["R@1"], "retrieval": table,
            "goals": {"t2i_recall_at_1_seen": 0.80, "t2i_recall_at_1_heldout": 0.50}}  # fmt: skip


def shape_prompts(model: CLIP, tokenizer: Any, config: CLIPConfig) -> torch.Tensor:
    """One unit embedding per shape: the caption style "a {size} {colour} {shape}", averaged over
    every size and colour (the set never names a shape without them)."""
    rows = []
    for shape in SHAPES:
        texts = [f"a {size} {colour} {shape}" for size in SIZES for colour in COLOURS]
        rows.append(F.normalize(embed_texts(model, texts, tokenizer, config).mean(0), dim=-1))
    return torch.stack(rows)


def section_zeroshot(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """The shape of one-object pictures: by prompt, and by a probe trained on one-object train pictures."""
    model, sets, config = trained(work, ctx), ctx["sets"](), ctx["config"]
    probe_train = sets["splits"]["train"]
    probe_train = probe_train.subset((probe_train.n_objects == 1).nonzero().flatten()[: args.probe_train])
    train_feats = embed(model, probe_train, sets["tokenizer"], config)["pooled"]
    prompts = shape_prompts(model, sets["tokenizer"], config)
    out = {}
    for name in ("test_seen", "test_heldout"):
        split = sets["splits"][name]
        single = split.subset(split.n_objects == 1)
        e = embed(model, single, sets["tokenizer"], config)
        out[name.removeprefix("test_")] = {
            "pictures": len(single), "zero_shot_accuracy": round(zero_shot(e["image"], prompts, single.labels), 4),
            "linear_probe_accuracy": round(linear_probe(train_feats, probe_train.labels, e["pooled"], single.labels, len(SHAPES)), 4),
            "chance": round(1 / len(SHAPES), 4),
        }  # fmt: skip
        print(
            f"zero-shot shape {name}: prompt {out[name.removeprefix('test_')]['zero_shot_accuracy']:.3f}  "
            f"probe {out[name.removeprefix('test_')]['linear_probe_accuracy']:.3f}  ({len(single)} pictures)"
        )
    return {
        "zero_shot_shapes": {
            **out,
            "probe_train_pictures": len(probe_train),
            "prompt": "mean of 'a {size} {colour} {shape}' over sizes and colours",
        }
    }


def section_pictures(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    model, sets, config = trained(work, ctx), ctx["sets"](), ctx["config"]
    out = figures(args)
    seen = sets["splits"]["test_seen"]
    small = seen.subset(torch.arange(10))
    e = embed(model, small, sets["tokenizer"], config)
    plot_similarity_matrix(
        e["image"] @ e["text"].T, small.images, small.captions, out / "clip_similarity.png"
    )
    paths = [out / "clip_similarity.png"]
    for name in ("test_seen", "test_heldout"):
        split = sets["splits"][name]
        emb = embed(model, split, sets["tokenizer"], config)
        path = out / f"clip_retrieval_{name.removeprefix('test_')}.png"
        plot_retrieval(split, emb, queries=[0, 1, 2, 3, 4], path=path)
        paths.append(path)
    repo = RESULTS.parent.parent
    return {"pictures": [str(p.relative_to(repo)) if p.is_relative_to(repo) else str(p) for p in paths]}


def section_batch(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """The number of negatives at one budget: each batch size calibrated, trained and scored."""
    config, sets = ctx["config"], ctx["sets"]()
    precision = ctx["results"].get("train", {}).get("precision", "fp32")
    rows = {}
    for batch in QUICK_BATCH_SIZES if args.quick else BATCH_SIZES:
        per_step = calibrate(
            config, sets["train"], batch, work / f"batch{batch}", args.calibrate_steps, (precision,)
        )[precision]
        run = train_clip(config, sets["train"], sets["eval"], work / f"batch{batch}" / "run", args.batch_minutes, batch,
                         precision, per_step, args.lr, args.least_steps)  # fmt: skip
        table = recall_rows(run.pop("model"), sets, config)
        rows[str(batch)] = {
            "steps": run["max_steps"], "train_minutes": run["train_minutes"], "seconds_per_step": round(per_step, 4),
            "pairs_seen": run["pairs_seen"], "final_loss": run["curve"][-1][1], "ln_batch": round(math.log(batch), 4),
            "peak_rss_gb_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **{f"{way}_R@1_{name}": table[name][way]["R@1"] for name in ("seen", "heldout") for way in ("t2i", "i2t")},
        }  # fmt: skip
        r = rows[str(batch)]
        print(
            f"batch {batch:4d}: {r['steps']} steps, {r['train_minutes']:.1f} min, t2i R@1 seen {r['t2i_R@1_seen']:.3f} "
            f"held-out {r['t2i_R@1_heldout']:.3f}, i2t seen {r['i2t_R@1_seen']:.3f} held-out {r['i2t_R@1_heldout']:.3f}"
        )
    return {"batch_size_table": rows, "batch_minutes_each": args.batch_minutes, "batch_precision": precision}


def section_fashion(args: argparse.Namespace, work: Path, ctx: dict[str, Any]) -> dict[str, Any]:
    """A short CLIP run on Fashion-MNIST captions; zero-shot by "a photo of a {class}" against the probe."""
    limit = 2000 if args.quick else None
    try:
        train_pairs = fashion_captions("train", limit=limit)
        test_pairs = fashion_captions("test", limit=limit)
    except ImageDataError as exc:
        print(f"fashion: skipped, {exc}")
        return {"fashion": {"skipped": f"Fashion-MNIST missing: {FASHION_MNIST_HINT}"}}
    config = ctx["config"]
    tokenizer = caption_tokenizer(config)

    def data(
        pairs: PairedImages,
    ) -> CaptionedImageData:  # class labels as caption ids: no same-class negatives
        return CaptionedImageData(
            pairs.images, pairs.captions, pairs.labels, tokenizer=tokenizer, pad_id=config.pad_token_id
        )

    train, test = data(train_pairs), data(test_pairs.subset(torch.arange(min(1000, len(test_pairs)))))
    per_step = calibrate(config, train, args.batch_size, work / "fashion", args.calibrate_steps, ("fp32",))[
        "fp32"
    ]
    run = train_clip(config, train, test, work / "fashion" / "run", args.fashion_minutes, args.batch_size, "fp32",
                     per_step, args.lr, args.least_steps)  # fmt: skip
    model = run.pop("model")
    probe_train = train_pairs.subset(torch.arange(min(args.probe_train, len(train_pairs))))
    train_feats = embed(model, probe_train, tokenizer, config)["pooled"]
    e = embed(model, test_pairs, tokenizer, config)
    prompts = embed_texts(
        model, [f"a photo of {with_article(n)}" for n in FASHION_CAPTION_NAMES], tokenizer, config
    )
    result = {"zero_shot_accuracy": round(zero_shot(e["image"], prompts, test_pairs.labels), 4),
              "linear_probe_accuracy": round(linear_probe(train_feats, probe_train.labels, e["pooled"], test_pairs.labels, 10), 4),
              "test_images": len(test_pairs), "probe_train_images": len(probe_train), "steps": run["max_steps"],
              "train_minutes": run["train_minutes"], "epochs": run["epochs"], "final_loss": run["curve"][-1][1]}  # fmt: skip
    print(
        f"fashion: zero-shot {result['zero_shot_accuracy']:.3f}  probe {result['linear_probe_accuracy']:.3f}  "
        f"({run['max_steps']} steps, {run['train_minutes']:.1f} min)"
    )
    return {"fashion": result}


# --- pictures ---------------------------------------------------------------------------------------


def plot_training(curve: list[tuple[int, float, float]], batch: int, path: Path) -> None:
    plt = pyplot()
    steps, losses, temps = zip(*curve)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(steps, losses, label="training loss")
    a.axhline(
        math.log(batch), color="red", linestyle="--", label=f"ln({batch}) = {math.log(batch):.2f}: chance"
    )
    a.set_xlabel("optimizer step")
    a.set_ylabel("symmetric InfoNCE")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(steps, temps, color="tab:green")
    b.set_xlabel("optimizer step")
    b.set_ylabel("exp(logit_scale)")
    b.set_title("learned temperature (clamped at 100)")
    b.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _picture(pairs: PairedImages, i: int) -> Any:
    return pairs.images[i].expand(3, -1, -1).permute(1, 2, 0).numpy()


def plot_retrieval(
    split: PairedImages, emb: dict[str, torch.Tensor], queries: list[int], path: Path, k: int = 5
) -> None:
    """For each query caption, its top-k pictures; a green title marks a picture with the query's caption."""
    plt = pyplot()
    fig, axes = plt.subplots(len(queries), k, figsize=(1.8 * k, 2.0 * len(queries)), squeeze=False)
    for row, q in enumerate(queries):
        scores = emb["image"] @ emb["text"][q]
        for col, j in enumerate(scores.topk(k).indices.tolist()):
            ax = axes[row][col]
            ax.imshow(_picture(split, j))
            hit = bool(split.caption_ids[j] == split.caption_ids[q])
            ax.set_title(f"{scores[j]:.2f}", color="green" if hit else "red", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row][0].set_ylabel(
            split.captions[q].replace(" above ", "\nabove ").replace(" left of ", "\nleft of "), fontsize=7
        )
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def figures(args: argparse.Namespace) -> Path:
    """Where pictures go: bench/results, or the work folder for --quick (whose numbers mean nothing)."""
    return Path(args.work_dir) if args.quick else RESULTS


# --- the driver -------------------------------------------------------------------------------------

SECTIONS = {"train": section_train, "retrieval": section_retrieval, "zeroshot": section_zeroshot,
            "pictures": section_pictures, "batch": section_batch, "fashion": section_fashion}  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument(
        "--redo", action="store_true", help="run the sections again even when the JSON holds them"
    )
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-time budget of the main run")
    parser.add_argument("--batch-minutes", type=float, default=5.0, help="budget of each batch-size run")
    parser.add_argument("--fashion-minutes", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--n-train", type=int, default=100_000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument(
        "--probe-train", type=int, default=5000, help="training pictures of the linear probes"
    )
    parser.add_argument("--calibrate-steps", type=int, default=12)
    parser.add_argument(
        "--work-dir", default=None, help="default out/bench_clip (--quick: out/bench_clip_quick)"
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.least_steps = 20
    unknown = [s for s in args.sections.split(",") if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    if args.quick:
        args.minutes, args.batch_minutes, args.fashion_minutes = (
            min(v, 0.1) for v in (args.minutes, args.batch_minutes, args.fashion_minutes)
        )
        args.n_train, args.n_test, args.probe_train = (
            min(args.n_train, 1024),
            min(args.n_test, 200),
            min(args.probe_train, 300),
        )
        args.calibrate_steps, args.batch_size, args.least_steps = 4, 32, 4
    args.work_dir = args.work_dir or ("out/bench_clip_quick" if args.quick else "out/bench_clip")
    return args


def main() -> None:
    args = parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "clip_quick.json" if args.quick else RESULTS / "clip.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    done = set(results.get("sections_done", []))
    config = clip_shapes()
    cache: dict[str, Any] = {}
    ctx: dict[str, Any] = {"config": config, "results": results,
                           "sets": lambda: cache.setdefault("sets", shapes_sets(args, config))}  # fmt: skip
    results.setdefault("machine_before", describe())
    for section in args.sections.split(","):
        if section in done and not args.redo:
            print(f"{section}: stored in {path}, skipped (--redo runs it again)")
            continue
        start = time.perf_counter()
        results.update(SECTIONS[section](args, work, ctx))
        results.setdefault("section_minutes", {})[section] = round((time.perf_counter() - start) / 60, 2)
        results["sections_done"] = sorted(done | {section})
        done.add(section)
        results["machine_after"] = describe()
        results["settings"] = {k: v for k, v in vars(args).items() if k != "sections"}
        path.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {path}")


def print_table(results: dict[str, Any]) -> None:
    table = results.get("retrieval")
    if table:
        print(f"{'set':9s} {'way':6s} " + " ".join(f"{k:>6s}" for k in table["seen"]["t2i"]))
        for name, rows in table.items():
            for way in ("t2i", "i2t", "chance"):
                print(f"{name:9s} {way:6s} " + " ".join(f"{v:6.3f}" for v in rows[way].values()))
    for batch, row in results.get("batch_size_table", {}).items():
        print(
            f"batch {batch:>4s}: t2i R@1 seen {row['t2i_R@1_seen']:.3f} held-out {row['t2i_R@1_heldout']:.3f}"
        )
    for name, row in results.get("zero_shot_shapes", {}).items():
        if isinstance(row, dict):
            print(
                f"shapes {name}: zero-shot {row['zero_shot_accuracy']:.3f} probe {row['linear_probe_accuracy']:.3f}"
            )
    fashion = results.get("fashion", {})
    if "zero_shot_accuracy" in fashion:
        print(
            f"fashion: zero-shot {fashion['zero_shot_accuracy']:.3f} probe {fashion['linear_probe_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
