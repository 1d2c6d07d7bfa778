"""Generate images: a diffusion model's samples for a class, as a grid, with the denoising strip of
the first image (x_T to x_0, the model's x_0 guess under each frame).

A thin layer over ``glassformer.models.diffusion.sampling.sample`` (DDIM or DDPM, classifier-free
guidance, seeded CPU noise: the same seed gives the same images) and its pictures (``save_grid``,
``save_strip``), as ``glassformer sample`` does. The models are the lab's diffusion models: runs
found under ``out/`` and any ``--model`` folder (ours or a diffusers ``UNet2DModel``).

Caps, checked on the server: at most ``max_images`` images and ``max_unet_calls`` network calls a
request (images x steps, twice that with guidance), so one request cannot hold the CPU for long.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glassformer.lab.context import LabContext
from glassformer.lab.limits import LabInputError

TITLE = "Generate images"
UNCONDITIONAL = "(none: unconditional)"
SAMPLERS = ("ddim", "ddpm")
MAX_GUIDANCE = 20.0


@dataclass
class Sampled:
    """What the tab shows for one request."""

    grid: Path  # every image
    strip: Path  # the first image's denoising, 10 snapshots
    summary: str


def _whole(value: object, what: str, low: int, high: int, fix: str = "") -> int:
    """``value`` as an integer in ``low..high`` (sliders send floats), else a refusal naming the range."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise LabInputError(f"{what} must be a whole number from {low} to {high}, got {value!r}{fix}")
    return int(value)


def request_steps(ctx: LabContext, model: Any, steps: object, n: int, guided: bool) -> int:
    """The sampler steps asked for, within the schedule and the lab's cap on network calls."""
    total = model.config.num_train_timesteps
    count = _whole(steps, "steps", 1, total, f" (the model was trained with {total} noise levels)")
    calls = n * count * (2 if guided else 1)
    if calls > ctx.limits.max_unet_calls:
        raise LabInputError(f"{n} images x {count} steps{' x 2 (guidance)' if guided else ''} is {calls:,} network "
                            f"calls; the lab allows {ctx.limits.max_unet_calls:,} a request. Ask for fewer images "
                            "or steps (DDIM needs far fewer than DDPM), or start the lab with a higher "
                            "--max-unet-calls")  # fmt: skip
    return count


def sample_images(ctx: LabContext, model_name: str, label: str = UNCONDITIONAL, n: object = 8,
                  sampler: str = "ddim", steps: object = 50, guidance: object = 0.0, seed: object = 0) -> Sampled:  # fmt: skip
    """``n`` images of class ``label`` from the diffusion model ``model_name``, and the first one's strip."""
    from glassformer.models.diffusion.pictures import save_grid, save_strip
    from glassformer.models.diffusion.sampling import sample

    count = _whole(n, "the number of images", 1, ctx.limits.max_images)
    if sampler not in SAMPLERS:
        raise LabInputError(f"sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    conditional = label not in (None, "", UNCONDITIONAL)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not 0 <= guidance <= MAX_GUIDANCE:
        raise LabInputError(f"guidance must be a number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}")
    guided = conditional and guidance > 0
    if guidance > 0 and not conditional:
        raise LabInputError("guidance steers towards a class: pick a class, or set guidance to 0")
    seed = _whole(seed, "the seed", 0, 2**63 - 1)
    model = ctx.catalog.get(model_name, "diffusion").model
    n_steps = request_steps(ctx, model, steps, count, guided)
    start = time.perf_counter()
    result = sample(model, count, steps=n_steps, sampler=sampler, guidance=float(guidance) if guided else None,
                    labels=label if conditional else None, seed=seed, return_trajectory=True)  # fmt: skip
    seconds = time.perf_counter() - start
    grid = save_grid(result.images, ctx.new_file("samples", ".png"), scale=4)
    strip = save_strip(result, ctx.new_file("strip", ".png"), scale=4)
    what = f"class {label}" + (f", guidance {guidance:g}" if guided else "") if conditional else "unconditional"
    summary = (f"{model_name}: {count} image(s), {what}, {sampler.upper()} with {len(result.timesteps)} steps, "
               f"seed {seed}: {seconds:.2f} s ({count / max(seconds, 1e-9):.1f} images/s). The same seed gives "
               "the same images (the noise is drawn on the CPU).")  # fmt: skip
    return Sampled(grid, strip, summary)


def class_choices(ctx: LabContext, model_name: str) -> list[str]:
    """The class names a model draws (ids when it has no names), after the unconditional choice."""
    config = ctx.catalog.get(model_name, "diffusion").model.config
    names = list(config.class_names) or [str(i) for i in range(config.n_classes)]
    return [UNCONDITIONAL, *names]


def build(ctx: LabContext) -> None:
    import gradio as gr

    from glassformer.lab.ui import error_boundary

    names = ctx.catalog.names("diffusion")
    if not names:
        gr.Markdown("No diffusion model is listed. Train one (`glassformer train ddpm-fashion`) and restart the "
                    "lab, or start it with `--model RUN/best` (a diffusers `UNet2DModel` folder works too).")  # fmt: skip
        return
    limits = ctx.limits
    model = gr.Dropdown(names, value=names[0], label="Diffusion model", elem_id="gen-model")
    with gr.Row():
        # the first model's classes now (diffusion models are small); another model's when it is picked
        label = gr.Dropdown(class_choices(ctx, names[0]), value=UNCONDITIONAL, label="Class", elem_id="gen-class")
        count = gr.Slider(1, limits.max_images, value=min(8, limits.max_images), step=1, label="Images",
                          elem_id="gen-n")  # fmt: skip
        sampler = gr.Radio(list(SAMPLERS), value="ddim", label="Sampler", elem_id="gen-sampler")
    with gr.Row():
        steps = gr.Number(50, precision=0, label="Steps (DDIM: 10-100; DDPM: all of the schedule's)",
                          elem_id="gen-steps")  # fmt: skip
        guidance = gr.Slider(0, MAX_GUIDANCE, value=0, step=0.5, label="Guidance (0: none)", elem_id="gen-guidance")
        seed = gr.Number(0, precision=0, label="Seed", elem_id="gen-seed")
        run = gr.Button("Generate", variant="primary", elem_id="gen-run")
    summary = gr.Markdown(elem_id="gen-summary")
    grid = gr.Image(label="Samples", type="filepath", elem_id="gen-grid", buttons=["download", "fullscreen"])
    strip = gr.Image(label="The first image, from noise to x_0 (the model's x_0 guess below each frame)",
                     type="filepath", elem_id="gen-strip", buttons=["download", "fullscreen"])  # fmt: skip

    @error_boundary
    def classes(name: str) -> Any:
        return gr.update(choices=class_choices(ctx, name), value=UNCONDITIONAL)

    @error_boundary
    def run_one(name: str, cls: str, n: float, how: str, k: float, w: float, s: float) -> tuple[str, str, str]:
        out = sample_images(ctx, name, cls, n, how, k, w, s)
        return str(out.grid), str(out.strip), out.summary

    model.change(classes, [model], [label])
    run.click(run_one, [model, label, count, sampler, steps, guidance, seed], [grid, strip, summary],
              concurrency_id="models")  # fmt: skip
