"""Class-conditional DDPM on Fashion-MNIST: quality by a judge network, steps against quality, speed.

The ``ddpm-fashion`` preset (a 0.7M UNet behind a 2x2 space-to-depth stem) trains through the one
engine (``glassformer.train.Trainer``, EMA 0.999) for a wall-clock budget on both cores. Quality is
measured without downloads: a small CNN (``CNNBaseline``), trained here on the real training
images, is the judge. Its pooled features give the Frechet distance between samples and the
10,000 test images; its predictions say whether a "sandal" sample looks like a sandal. The floor
is the distance of as many real training images as there are samples, in the same table: the
distance is biased upwards by a small count, so only equal counts compare.

Sections (``--sections``, comma-separated; default all, in this order):

- ``speed``: images/s of DDIM-50 at guidance 3, ours (``sample``) against diffusers' loop (their
  ``UNet2DModel`` with our weights, their ``DDIMScheduler``; the loop every diffusers pipeline
  runs), same batch, same machine moment;
- ``train``: the denoiser, ``--minutes`` of wall time (steps calibrated from the engine's own rate);
- ``judge``: the classifier, ``--judge-minutes``; its test accuracy is the ceiling of the next one;
- ``quality``: DDIM-50 at guidance 0, 1, 3 on ``--samples`` images (balanced classes): Frechet
  distance, judge accuracy, seconds per 100 images;
- ``steps``: DDIM 10/20/50/100 and DDPM-1000 at guidance 0 on ``--steps-samples`` images (the same
  x_T in every row): Frechet distance and seconds per 100 images (DDPM-1000 is 1,000 UNet calls an
  image: the count is what fits a CPU benchmark);
- ``variants``: DDIM-50 at guidance 0 with "trailing" spacing and with eta 1, on the steps
  table's images: what the sampler's two options do to the distance;
- ``pictures``: the denoising strip, its GIF and a grid per class.

Run (``--quick`` checks the plumbing in about a minute; its numbers mean nothing)::

    .venv/bin/python bench/diffusion.py                 # ~90 min on 2 cores
    .venv/bin/python bench/diffusion.py --sections quality,steps,pictures   # reuse the trained model

Writes ``bench/results/diffusion.json`` (``--quick``: the work folder) with ``conditional_accuracy``,
``fd_ddim_50``, ``fd_ddpm_1000``, ``fd_real_floor`` (the steps table's floor, same count),
``sampling_speedup_vs_diffusers`` (their time / ours), ``train_minutes``, the tables and the
machine; PNGs ``diffusion_strip.png``, ``diffusion_grid.png``, ``diffusion_training.png`` and
``diffusion_denoising.gif``.
"""

from __future__ import annotations

import argparse
import json
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

from glassformer import registry  # noqa: E402
from glassformer.data.images import load_fashion_mnist  # noqa: E402
from glassformer.metrics import frechet_distance  # noqa: E402
from glassformer.models.diffusion import DiffusionUNet, load_for_sampling, sample  # noqa: E402
from glassformer.models.diffusion.config import ddpm_fashion  # noqa: E402
from glassformer.models.diffusion.data import ImageDataset, build_fashion_data, to_model_range  # noqa: E402
from glassformer.models.diffusion.diffusers_io import config_to_diffusers, state_to_diffusers, unpatched  # noqa: E402
from glassformer.models.diffusion.pictures import save_gif, save_grid, save_strip  # noqa: E402
from glassformer.models.vit.baseline import CNNBaseline, CNNConfig  # noqa: E402
from glassformer.registry import DataRequest  # noqa: E402
from glassformer.train import TrainConfig, Trainer, latest_checkpoint  # noqa: E402
from glassformer.train.budget import seconds_per_step, steps_for_minutes  # noqa: E402
from glassformer.train.report import plot_curves  # noqa: E402
from glassformer.utils.machine import describe  # noqa: E402
from glassformer.utils.weights import read_safetensors  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GUIDANCES = (0.0, 1.0, 3.0)
STEP_ROWS = (("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 100), ("ddpm", 1000))
CHUNK = 500  # images sampled per batch (guidance doubles it)


def padded_test() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist("test")
    return to_model_range(images, 32), labels


def trained_model(work: Path) -> DiffusionUNet:
    """The train section's last checkpoint, with its EMA weights."""
    folder = latest_checkpoint(work / "ddpm" / "checkpoints")
    if folder is None:
        raise SystemExit(f"no trained model under {work / 'ddpm'}: run the train section first")
    return load_for_sampling(folder)


def balanced(n: int, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


def generate(model: DiffusionUNet, labels: torch.Tensor, **kw: Any) -> tuple[torch.Tensor, float]:
    """Images for ``labels`` in chunks (chunk ``i`` seeded ``i``: every row starts from the same x_T),
    and the seconds they took."""
    start, out = time.perf_counter(), []
    for i, first in enumerate(range(0, len(labels), CHUNK)):
        out.append(sample(model, len(labels[first:first + CHUNK]), labels=labels[first:first + CHUNK], seed=i, **kw).images)
    return torch.cat(out), time.perf_counter() - start


# --- speed: ours against diffusers' loop on the same weights -----------------------------------------

def diffusers_sampler(model: DiffusionUNet) -> Any:
    """diffusers' UNet2DModel (the inner network of our 2x2 stem, our weights) and DDIM loop."""
    from diffusers import DDIMScheduler, UNet2DModel

    cfg = model.config
    fields = {k: v for k, v in config_to_diffusers(unpatched(cfg)).items() if not k.startswith("_")}
    unet = UNet2DModel(**fields).eval()
    unet.load_state_dict(state_to_diffusers(model))
    scheduler = DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                              clip_sample=cfg.clip_sample, clip_sample_range=cfg.clip_sample_range,
                              set_alpha_to_one=True, timestep_spacing="leading")  # fmt: skip
    p = cfg.patch_size

    @torch.no_grad()
    def run(labels: torch.Tensor, steps: int, guidance: float, seed: int) -> torch.Tensor:
        n = len(labels)
        x = torch.randn(n, 1, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(seed))
        both = torch.cat([labels, torch.full_like(labels, cfg.null_class)])
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            out = unet(F.pixel_unshuffle(torch.cat([x, x]), p), t, class_labels=both).sample
            cond, uncond = F.pixel_shuffle(out, p).chunk(2)
            guided = cond + guidance * (cond - uncond)  # diffusers' scale: 1 + w
            x = scheduler.step(guided, t, x, use_clipped_model_output=True).prev_sample  # as sample()'s default
        return x

    return run


def section_speed(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    torch.manual_seed(0)
    # the speed of a call does not depend on training, but agreement does: random weights under
    # guidance amplify float rounding step after step, so the trained model is used when there is one
    trained = latest_checkpoint(work / "ddpm" / "checkpoints") is not None
    model = trained_model(work) if trained else DiffusionUNet(ddpm_fashion()).eval()
    theirs = diffusers_sampler(model)
    n, steps, w = (64, 5, 3.0) if args.quick else (256, 50, 3.0)
    labels = balanced(n)
    ours_s, theirs_s = [], []
    for rep in range(2):  # alternate, so both see the same machine moments; keep each one's best
        start = time.perf_counter()
        mine = sample(model, n, steps=steps, labels=labels, guidance=w, seed=rep).images
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        other = theirs(labels, steps, w, rep).clamp(-1, 1)
        theirs_s.append(time.perf_counter() - start)
    difference = float((mine - other).abs().max())
    ratio = min(theirs_s) / min(ours_s)
    print(f"speed: ours {n / min(ours_s):.1f} img/s, diffusers {n / min(theirs_s):.1f} img/s: {ratio:.2f}x "
          f"(max |difference| {difference:.1e})")  # fmt: skip
    return {"sampling_speedup_vs_diffusers": round(ratio, 3), "speed": {
        "images": n, "sampler": f"ddim-{steps}", "guidance": w, "ours_images_per_s": round(n / min(ours_s), 2),
        "diffusers_images_per_s": round(n / min(theirs_s), 2), "max_abs_difference": difference,
        "weights": "trained" if trained else "random"}}


# --- train: the denoiser through the engine -------------------------------------------------------------

def section_train(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    config = ddpm_fashion()
    request = DataRequest(preset=registry.get("ddpm-fashion"))
    train, val = build_fashion_data(None, config, request)
    if args.quick:
        train, val = ImageDataset(train.images[:2000], train.labels[:2000]), ImageDataset(val.images[:200], val.labels[:200])
    torch.manual_seed(0)
    model = DiffusionUNet(config)
    batch = 128
    per_step = seconds_per_step(model, train, batch, work, ema_decay=0.999)
    max_steps = steps_for_minutes(args.minutes, per_step, reserve=60.0, at_least=20)
    cfg = TrainConfig(
        out_dir=str(work / "ddpm"), seed=0, max_steps=max_steps, batch_size=batch, lr=1e-3, weight_decay=0.0,
        betas=(0.9, 0.999), grad_clip=1.0, schedule="cosine", warmup_steps=min(500, max_steps // 10),
        min_lr_ratio=0.05, ema_decay=0.999, eval_interval=max(1, max_steps // 6), eval_batches=8,
        save_interval=max(1, max_steps // 4), keep_last=1, log_interval=50, plot=False, precision="fp32",
    )  # fmt: skip
    shutil.rmtree(work / "ddpm", ignore_errors=True)  # the section starts over
    start = time.perf_counter()
    summary = Trainer(model, cfg, train, val).fit()
    minutes = (time.perf_counter() - start) / 60
    plot_curves(work / "ddpm" / "log.jsonl", figures(args, work) / "diffusion_training.png", title="ddpm-fashion")
    return {"train_minutes": round(minutes, 2), "train": {
        "parameters": sum(p.numel() for p in model.parameters()), "max_steps": max_steps, "batch_size": batch,
        "epochs": round(max_steps * batch / len(train), 2), "seconds_per_step": round(per_step, 4),
        "final_train_loss": getattr(summary, "final_loss", None), "threads": torch.get_num_threads()}}


# --- judge: the classifier whose features and predictions score the samples ------------------------------

def judge_path(work: Path) -> Path:
    return work / "judge" / "best" / "model.safetensors"


def load_judge(work: Path) -> CNNBaseline:
    judge = CNNBaseline(JUDGE)
    judge.load_state_dict(read_safetensors(judge_path(work)))
    return judge.eval()


JUDGE = CNNConfig(widths=(16, 32, 64, 128), blocks_per_stage=1, dropout=0.1)


def section_judge(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    train, val = build_fashion_data(None, ddpm_fashion(), DataRequest(preset=registry.get("ddpm-fashion")))
    if args.quick:
        train = ImageDataset(train.images[:2000], train.labels[:2000])
    torch.manual_seed(0)
    judge = CNNBaseline(JUDGE)
    per_step = seconds_per_step(judge, train, 128, work / "judge-calibrate")
    max_steps = steps_for_minutes(args.judge_minutes, per_step, reserve=20.0)
    cfg = TrainConfig(out_dir=str(work / "judge"), seed=0, max_steps=max_steps, batch_size=128, lr=2e-3,
                      weight_decay=0.05, betas=(0.9, 0.999), schedule="cosine", warmup_steps=max_steps // 20,
                      min_lr_ratio=0.01, eval_interval=max(1, max_steps // 3), eval_batches=0,
                      best_metric="eval_accuracy", best_mode="max", save_interval=max_steps, keep_last=1,
                      log_interval=50, plot=False, precision="fp32")  # fmt: skip
    shutil.rmtree(work / "judge", ignore_errors=True)
    Trainer(judge, cfg, train, val).fit()
    test_x, test_y = padded_test()
    predicted, _ = judge_outputs(load_judge(work), test_x)
    accuracy = float((predicted == test_y).float().mean())
    print(f"judge: {accuracy:.2%} on the test set")
    return {"judge": {"test_accuracy": round(accuracy, 4), "max_steps": max_steps,
                      "epochs": round(max_steps * 128 / len(train), 2), "config": JUDGE.to_dict()}}


@torch.no_grad()
def judge_outputs(judge: CNNBaseline, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted classes ``(N,)`` and pooled features ``(N, D)`` of images in [-1, 1]."""
    preds, feats = [], []
    for chunk in images.split(1000):
        f = judge.features(chunk)
        feats.append(f)
        preds.append(judge.head(f).argmax(-1))
    return torch.cat(preds), torch.cat(feats)


# --- quality and steps tables ----------------------------------------------------------------------------

def floor(judge: CNNBaseline, count: int, test_feats: torch.Tensor) -> float:
    """The distance of ``count`` real training images to the test set: the best a sampler can hope for."""
    images, _ = load_fashion_mnist("train")
    chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:count]
    _, feats = judge_outputs(judge, to_model_range(images[chosen], 32))
    return frechet_distance(feats, test_feats)


def score(judge: CNNBaseline, images: torch.Tensor, labels: torch.Tensor, test_feats: torch.Tensor) -> dict[str, float]:
    predicted, feats = judge_outputs(judge, images)
    return {"frechet_distance": round(frechet_distance(feats, test_feats), 3),
            "judge_accuracy": round(float((predicted == labels).float().mean()), 4)}


def scoring_setup(work: Path, count: int) -> tuple[DiffusionUNet, CNNBaseline, torch.Tensor, torch.Tensor]:
    """The trained model, the judge, its features of the test set and ``count`` balanced labels."""
    model, judge = trained_model(work), load_judge(work)
    test_x, _ = padded_test()
    _, test_feats = judge_outputs(judge, test_x)
    return model, judge, test_feats, balanced(count)


def section_quality(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model, judge, test_feats, labels = scoring_setup(work, args.samples)
    rows = []
    for w in GUIDANCES:
        images, seconds = generate(model, labels, steps=50, sampler="ddim", guidance=w)
        row = {"guidance": w, **score(judge, images, labels, test_feats), "seconds_per_100": round(100 * seconds / len(labels), 2)}
        print(f"quality: {row}")
        rows.append(row)
    best = max(rows, key=lambda r: r["judge_accuracy"])
    return {"conditional_accuracy": best["judge_accuracy"], "best_guidance": best["guidance"],
            "quality": {"samples": args.samples, "sampler": "ddim-50", "rows": rows,
                        "fd_real_floor": round(floor(judge, args.samples, test_feats), 3)}}


def section_steps(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model, judge, test_feats, labels = scoring_setup(work, args.steps_samples)
    rows = {}
    for sampler, nominal in STEP_ROWS:
        steps = max(2, nominal // 50) if args.quick else nominal
        images, seconds = generate(model, labels, steps=steps, sampler=sampler, guidance=0.0)
        rows[f"{sampler}_{nominal}"] = {"sampler": sampler, "steps": steps, **score(judge, images, labels, test_feats),
                                        "seconds_per_100": round(100 * seconds / len(labels), 2)}  # fmt: skip
        print(f"steps: {rows[f'{sampler}_{nominal}']}")
    ddim50, ddpm = rows["ddim_50"], rows["ddpm_1000"]
    base = floor(judge, args.steps_samples, test_feats)
    return {"fd_ddim_50": ddim50["frechet_distance"], "fd_ddpm_1000": ddpm["frechet_distance"],
            "fd_real_floor": round(base, 3),
            "steps": {"samples": args.steps_samples, "guidance": 0.0, "rows": list(rows.values()),
                      "ddim_50_over_ddpm_1000_fd": round(ddim50["frechet_distance"] / ddpm["frechet_distance"], 3),
                      "ddim_50_time_fraction": round(ddim50["seconds_per_100"] / ddpm["seconds_per_100"], 4)}}


VARIANTS = (("trailing", 0.0), ("leading", 1.0), ("trailing", 1.0))  # (spacing, eta) beside the steps table's DDIM-50


def section_variants(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """DDIM-50 with the other spacing and with DDPM's noise (eta 1), on the steps table's images and x_T."""
    model, judge, test_feats, labels = scoring_setup(work, args.steps_samples)
    rows = []
    for spacing, eta in VARIANTS:
        images, seconds = generate(model, labels, steps=5 if args.quick else 50, sampler="ddim", guidance=0.0,
                                   spacing=spacing, eta=eta)  # fmt: skip
        rows.append({"spacing": spacing, "eta": eta, **score(judge, images, labels, test_feats),
                     "seconds_per_100": round(100 * seconds / len(labels), 2)})  # fmt: skip
        print(f"variants: {rows[-1]}")
    return {"ddim_50_variants": {"samples": args.steps_samples, "guidance": 0.0, "rows": rows}}


def section_pictures(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model, out = trained_model(work), figures(args, work)
    names = model.config.class_names
    traced = sample(model, 10, steps=50, labels=list(range(10)), guidance=3.0, seed=0, return_trajectory=True)
    paths = {"strip": save_strip(traced, out / "diffusion_strip.png", index=5),  # a sandal
             "gif": save_gif(traced, out / "diffusion_denoising.gif", nrow=10)}
    per_class = sample(model, 80, steps=50, labels=[c for c in range(10) for _ in range(8)], guidance=3.0, seed=1)
    paths["grid"] = save_grid(per_class.images, out / "diffusion_grid.png", nrow=8, scale=3)
    print("pictures: " + ", ".join(str(p) for p in paths.values()) + f" (grid rows: {', '.join(names)})")
    return {"pictures": {k: str(p) for k, p in paths.items()}}


def figures(args: argparse.Namespace, work: Path) -> Path:
    """Where pictures go: bench/results, or the work folder for --quick (whose numbers mean nothing)."""
    return work if args.quick else RESULTS


SECTIONS = {"speed": section_speed, "train": section_train, "judge": section_judge, "quality": section_quality,
            "steps": section_steps, "variants": section_variants, "pictures": section_pictures}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--minutes", type=float, default=40.0, help="wall-time budget of the denoiser's training")
    parser.add_argument("--judge-minutes", type=float, default=4.0)
    parser.add_argument("--samples", type=int, default=2000, help="images per row of the quality table")
    parser.add_argument("--steps-samples", type=int, default=1000, help="images per row of the steps table")
    parser.add_argument("--work-dir", default="out/bench-diffusion")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.judge_minutes, args.samples, args.steps_samples = 0.3, 0.2, 40, 20
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    path = (work / "diffusion_quick.json") if args.quick else RESULTS / "diffusion.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for section in args.sections.split(","):
        if section not in SECTIONS:
            raise SystemExit(f"unknown section {section!r}; the sections are {', '.join(SECTIONS)}")
        results.update(SECTIONS[section](args, work))
        results["machine"] = describe()
        path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
