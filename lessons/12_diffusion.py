"""Lesson 12: diffusion, by hand: noising, one reverse step (DDPM and DDIM), a tiny UNet, the denoising strip.

Run:  python lessons/12_diffusion.py [--out DIR] [--quick]

A diffusion model (Sohl-Dickstein et al. 2015; Ho et al. 2020, "DDPM") generates by learning to
undo noise. Everything rests on one fixed **forward process** that destroys an image in N small
Gaussian steps, and one network that is taught to guess, from a noisy image and the step number,
which noise was added:

1. **forward**: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, ``eps ~ N(0, I)``, where
   ``abar_t`` is the product of ``1 - beta_s`` over the first t steps; no network involved;
2. **training**: pick an image, a step t and noise eps, build x_t in one go with (1), and regress
   the network's output on eps (mean squared error);
3. **sampling**: start from pure noise x_T and walk back, each step turning the network's guess of
   the noise into a slightly cleaner image: DDPM's ancestral step (1,000 steps, random) or DDIM's
   (Song et al. 2021: any subsequence of steps, deterministic at eta 0).

This lesson computes (1) and one step of (3), both samplers, from the papers' equations in plain
torch and checks them against ``glassformer.models.diffusion`` (and against ``diffusers`` when it
is installed). It then trains a tiny class-conditional UNet for a few hundred steps (Fashion-MNIST
from ``make fashion-mnist``, else scikit-learn's bundled 8x8 digits), runs the guided sampling loop
by hand against ``sample(...)``, and draws the denoising strip and a grid of samples per class.
``--quick`` trains a handful of steps only: the checks are the same, the pictures are noise.
"""

from __future__ import annotations

import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from _lesson import check, parse_args, save, section, show

from glassformer.data.images import ImageDataError, load_fashion_mnist
from glassformer.models.diffusion import DiffusionUNet, sample
from glassformer.models.diffusion.config import ddpm_fashion
from glassformer.models.diffusion.data import to_model_range
from glassformer.models.diffusion.pictures import save_grid, save_strip
from glassformer.models.diffusion.samplers import DDIMSampler, DDPMSampler
from glassformer.models.diffusion.schedule import NoiseSchedule
from glassformer.train.ema import EMA

try:  # the reference implementation, for the checks that name it
    import diffusers
except ImportError:
    diffusers = None

args = parse_args("12", __doc__)
torch.manual_seed(0)


def training_images(n: int) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], str]:
    """``n`` training images as float (n, 1, 16, 16) in [-1, 1], their labels, class names, and the source."""
    try:
        raw, labels = load_fashion_mnist("train")
        # the preset's own preprocessing (pad 28 -> 32 with black, scale to [-1, 1]), then 2x2 means:
        # 16x16 keeps every training step of this lesson a quarter of the preset's cost
        pixels = F.avg_pool2d(to_model_range(raw[:n], 32), 2)
        return pixels, labels[:n], ddpm_fashion().class_names, "Fashion-MNIST (train)"
    except (ImageDataError, FileNotFoundError) as missing:
        print(f"({missing}; using scikit-learn's 8x8 digits instead)")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    small = torch.tensor(digits.images[:n], dtype=torch.float32)[:, None] / 8 - 1  # 0..16 -> [-1, 1]
    resized = F.interpolate(small, size=12, mode="bilinear", align_corners=False)  # (n, 1, 12, 12)
    pixels = F.pad(resized, (2, 2, 2, 2), value=-1.0)  # a black border, as Fashion-MNIST's
    return pixels, torch.tensor(digits.target[:n]), tuple(str(d) for d in range(10)), "scikit-learn digits"


# The lesson works by hand with DDPM's own choices: 1,000 linear betas from 1e-4 to 0.02 and epsilon
# prediction. The preset itself trains with the cosine schedule and v-prediction; section 2 shows why.
config = ddpm_fashion().replace(beta_schedule="linear", prediction_type="epsilon")
schedule = NoiseSchedule.from_config(config)
N = config.num_train_timesteps
images, labels, class_names, source = training_images(256 if args.quick else 4_096)
x0 = images[:4].double()  # (4, 1, 16, 16): the images sections 1-3 follow, in float64 for exact checks
print(f"data: {len(images)} images from {source}, 16x16, in [-1, 1]")

# ---------------------------------------------------------------------------------------------
section("1. The forward process by hand")
# beta_t is the variance of the noise that step t adds; alpha_t = 1 - beta_t the share of the
# variance that survives it. Scaling the image by sqrt(alpha_t) before adding the noise keeps the
# total variance at 1, so after many steps x_t is a standard Gaussian whatever x_0 was. Gaussians
# compose, so t steps in a row are one Gaussian step: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
# with abar_t = alpha_1 ... alpha_t. That closed form is what makes training cheap: any noise level
# in one multiplication, no chain to run.
betas = torch.linspace(config.beta_start, config.beta_end, N, dtype=torch.float64)
abar = torch.cumprod(1 - betas, dim=0)  # (N,)
# The library builds the betas and their product in float32, the way diffusers does, so that the
# two agree to the last bit on the noise levels; float64 from the formula is 3e-7 away at most.
check("abar_t = prod(1 - beta_s), float64 by hand == NoiseSchedule (float32-built)", abar,
      schedule.alphas_cumprod, atol=1e-6)  # fmt: skip

# Nichol & Dhariwal's cosine schedule defines abar directly, abar(t) = f(t) / f(0) with
# f(t) = cos^2((t / N + s) / (1 + s) * pi / 2), s = 0.008, and caps each beta at 0.999 (the last
# step would otherwise destroy all the signal at once, beta = 1).
f = torch.cos((torch.arange(N + 1, dtype=torch.float64) / N + 0.008) / 1.008 * math.pi / 2) ** 2
cosine_betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
cosine = NoiseSchedule(N, "squaredcos_cap_v2")
check("cosine betas by hand == NoiseSchedule('squaredcos_cap_v2')", cosine_betas, cosine.betas, atol=1e-6)
# From here on the float32-built table itself, so that the hand computations below can match the
# library (and diffusers) exactly rather than to 3e-7.
abar = schedule.alphas_cumprod

steps_shown = torch.tensor([0, 50, 100, 250, 500, 750, N - 1])
eps = torch.randn(len(steps_shown), *x0.shape[1:], dtype=torch.float64)
clean = x0[:1].expand(len(steps_shown), -1, -1, -1)  # (7, 1, 16, 16): one image at seven noise levels
a = abar[steps_shown].view(-1, 1, 1, 1)
x_t = a.sqrt() * clean + (1 - a).sqrt() * eps
check("x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps == NoiseSchedule.add_noise", x_t,
      schedule.add_noise(clean, eps, steps_shown))  # fmt: skip
if diffusers is not None:
    reference = diffusers.DDPMScheduler(num_train_timesteps=N, beta_start=config.beta_start,
                                        beta_end=config.beta_end, beta_schedule="linear")  # fmt: skip
    # diffusers keeps abar in float32 and multiplies in float32: equal up to float32 rounding
    check("x_t by hand == diffusers.DDPMScheduler.add_noise (float32)", x_t,
          reference.add_noise(clean.float(), eps.float(), steps_shown), atol=1e-5)  # fmt: skip
else:
    print("(diffusers is not installed: skipping the comparison with DDPMScheduler)")
# The signal-to-noise ratio abar / (1 - abar) falls from 1e4 to 4e-5: the last steps are noise.
show("log10 SNR at the steps shown, linear schedule", (abar / (1 - abar)).log10()[steps_shown], 2)

cosine_abar = cosine.alphas_cumprod
c = cosine_abar[steps_shown].view(-1, 1, 1, 1)
rows = {"linear": x_t, "cosine": c.sqrt() * clean + (1 - c).sqrt() * eps}
layout = [["curve"] * len(steps_shown), *[[f"{r}{i}" for i in range(len(steps_shown))] for r in rows]]
fig, axes = plt.subplot_mosaic(layout, figsize=(11, 6.2), height_ratios=[1.4, 1, 1], layout="constrained")
axes["curve"].plot(abar.sqrt(), label="linear: sqrt(abar_t), the signal's scale")
axes["curve"].plot(cosine_abar.sqrt(), label="cosine (squaredcos_cap_v2)")
axes["curve"].set_xlabel("t")
axes["curve"].legend()
for r, noisy in rows.items():
    for i, t in enumerate(steps_shown.tolist()):
        ax = axes[f"{r}{i}"]
        ax.imshow(noisy[i, 0].clamp(-2.5, 2.5), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{r} t={t}", fontsize=8)
fig.suptitle("the same image and noise at seven steps: the cosine schedule keeps the image longer")
save(fig, args.out, "forward.png")

# ---------------------------------------------------------------------------------------------
section("2. What the network predicts: epsilon or velocity")
# Given x_t, the noise and the clean image determine each other: x_0 = (x_t - sqrt(1 - abar) eps)
# / sqrt(abar). So a network that predicts eps ("epsilon", DDPM) also predicts x_0. The catch is the
# division by sqrt(abar): at t = 999 it is 0.0064, and an error d in the predicted noise becomes
# an error d * sqrt((1 - abar) / abar), 157 d, in x_0: at high noise the x_0 guess is wild (this
# is why samplers clip it to [-1, 1], clip_sample). The velocity v = sqrt(abar) eps - sqrt(1 - abar)
# x_0 (Salimans & Ho 2022) is a rotation of the pair (x_0, eps): x_0 = sqrt(abar) x_t -
# sqrt(1 - abar) v and eps = sqrt(abar) v + sqrt(1 - abar) x_t, so an error d in v moves x_0 by at
# most d at every step. Schedules that reach pure noise (abar_T = 0) need it: there x_0 cannot be
# read from eps at all.
t = 500
noise = torch.randn_like(x0)  # (4, 1, 16, 16)
x_t = schedule.add_noise(x0, noise, torch.full((4,), t))
a = abar[t].item()
x0_from_eps = (x_t - math.sqrt(1 - a) * noise) / math.sqrt(a)
check("x_0 from the true eps, by hand == NoiseSchedule.split (epsilon)", x0_from_eps,
      schedule.split(noise, x_t, t)[0])  # fmt: skip
check("... and it is the clean image", x0_from_eps, x0, atol=1e-5)
velocity = math.sqrt(a) * noise - math.sqrt(1 - a) * x0
v_schedule = NoiseSchedule(N, prediction_type="v_prediction")
check("v = sqrt(abar) eps - sqrt(1 - abar) x_0 == NoiseSchedule.velocity", velocity,
      v_schedule.velocity(x0, noise, torch.full((4,), t)))  # fmt: skip
x0_v, eps_v = v_schedule.split(velocity, x_t, t)
check("from v: x_0 = sqrt(abar) x_t - sqrt(1 - abar) v (NoiseSchedule.split, v_prediction)", x0_v,
      math.sqrt(a) * x_t - math.sqrt(1 - a) * velocity)  # fmt: skip
check("from v: eps = sqrt(abar) v + sqrt(1 - abar) x_t", eps_v, noise, atol=1e-5)
for step in (0, 250, 500, 750, N - 1):
    s = abar[step].item()
    print(f"t={step:4d}: an error d in the prediction moves x_0 by {math.sqrt((1 - s) / s):8.3f} d (epsilon) "
          f"or {math.sqrt(1 - s):.3f} d (velocity)")

# ---------------------------------------------------------------------------------------------
section("3. One reverse step by hand: DDPM, then DDIM")
# A denoiser that is a little wrong: the true noise plus 10% error, the kind of output a trained
# network gives. The steps below only need the model's output, not the model.
output = noise + 0.1 * torch.randn_like(noise)
x0_hat = (x_t - math.sqrt(1 - a) * output) / math.sqrt(a)

# DDPM (Ho et al. eq. 6-7): given x_t and x_0 the previous step is Gaussian, the posterior
#   q(x_{t-1} | x_t, x_0) = N(mu, beta~_t),
#   mu = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
#   beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
# Sampling plugs the model's guess in for x_0 and draws. Substituting x_0 = x0_hat gives the paper's
# eq. 11 in terms of the noise, mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t).
# alpha_t is written abar_t / abar_{t-1}: the same number on the full schedule, and still right
# when a sampler visits only some of the steps (then "t - 1" is the previous step it visits).
a_prev = abar[t - 1].item()
alpha = a / a_prev
beta = 1 - alpha


def posterior_mean(x0_guess: torch.Tensor) -> torch.Tensor:
    """Eq. 7's mu for the step t -> t - 1, from x_t and a guess of x_0."""
    return math.sqrt(a_prev) * beta / (1 - a) * x0_guess + math.sqrt(alpha) * (1 - a_prev) / (1 - a) * x_t


mean_x0 = posterior_mean(x0_hat)
mean_eps = (x_t - beta / math.sqrt(1 - a) * output) / math.sqrt(alpha)
check("DDPM mean from x_0 (eq. 7) == from eps (eq. 11)", mean_x0, mean_eps, atol=1e-9)
z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
variance = (1 - a_prev) / (1 - a) * beta
ddpm_by_hand = mean_eps + math.sqrt(variance) * z
unclipped = NoiseSchedule(N, clip_sample=False)
check("DDPM step by hand == DDPMSampler.step (clip_sample=False)", ddpm_by_hand,
      DDPMSampler(unclipped).step(output, t, x_t, noise=z).prev_sample)  # fmt: skip
# The preset clips the x_0 guess to the data's range first (clip_sample=True); then eq. 7 is the
# form the library uses, since eq. 11 has no x_0 to clip.
ddpm_clipped = DDPMSampler(schedule).step(output, t, x_t, noise=z).prev_sample
check("DDPM step, x_0 clipped, by hand == DDPMSampler.step",
      posterior_mean(x0_hat.clamp(-1, 1)) + math.sqrt(variance) * z, ddpm_clipped)  # fmt: skip
if diffusers is not None:
    # diffusers draws the same z from a generator seeded the same way; its coefficients are float32
    theirs = reference.step(output, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    check("DDPM step == diffusers.DDPMScheduler.step", ddpm_clipped, theirs, atol=1e-5)

# DDIM (Song et al. eq. 12) reads the same training as a family of processes that all share the
# marginals q(x_t | x_0), the only thing the loss ever looked at. Its step from t to any earlier s:
#   x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
#   sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s):
# "predict the clean image, then re-noise it to level s with the noise the model saw". eta = 0 adds
# no fresh noise (deterministic: the same x_T always gives the same image); eta = 1 is DDPM's
# variance. Because s may be any earlier step, 50 steps of stride 20 replace DDPM's 1,000.
ddim = DDIMSampler(schedule, steps=50)  # timesteps 980, 960, ..., 0 ("leading" spacing)
s = t - ddim.stride  # 480
a_s = abar[s].item()
ddim_by_hand = math.sqrt(a_s) * x0_hat.clamp(-1, 1) + math.sqrt(1 - a_s) * output  # eta = 0: sigma = 0
check("DDIM step t=500 -> 480 by hand == DDIMSampler.step (eta 0)", ddim_by_hand,
      ddim.step(output, t, x_t).prev_sample)  # fmt: skip
if diffusers is not None:
    their_ddim = diffusers.DDIMScheduler(num_train_timesteps=N, beta_start=config.beta_start,
                                         beta_end=config.beta_end, beta_schedule="linear")  # fmt: skip
    their_ddim.set_timesteps(50)
    theirs = their_ddim.step(output, t, x_t).prev_sample
    check("DDIM step == diffusers.DDIMScheduler.step", ddim_by_hand, theirs, atol=1e-5)
sigma_1 = math.sqrt((1 - a_s) / (1 - a) * (1 - a / a_s))
print(f"DDIM's sigma at eta 1 for the jump 500 -> 480: {sigma_1:.4f} (DDPM's posterior std over that jump)")
# With a perfect denoiser (output = the true noise) the deterministic step lands exactly on the
# forward process at step s with the same noise: x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps.
# The sampler walks back along one noise direction, which is why big strides lose little.
perfect = ddim.step(noise, t, x_t).prev_sample
check("DDIM with the true noise lands on add_noise(x_0, eps, 480)", perfect,
      schedule.add_noise(x0, noise, torch.full((4,), s)), atol=1e-6)  # fmt: skip

# ---------------------------------------------------------------------------------------------
section("4. Training a tiny class-conditional UNet")
# The UNet: three levels of ResBlocks at 16x16, 8x8 and 4x4 pixels, self-attention at the two
# smaller ones, skips from the way down to the way up, every ResBlock adding an embedding of t (a
# sinusoid through an MLP) plus one of the class. One network denoises every
# noise level of every class. Its training loss is section 1 plus a regression: draw t and eps,
# build x_t, predict eps, mean squared error.
tiny = config.replace(image_size=16, patch_size=1, channels=(16, 32, 32), attention=(False, True, True),
                      head_dim=16, class_names=class_names)  # fmt: skip
model = DiffusionUNet(tiny)
n_parameters = sum(p.numel() for p in model.parameters())
print(f"UNet: levels {tiny.channels}, attention {tiny.attention}, {n_parameters:,} parameters")
model.eval()  # eval mode: the library's loss then drops no class and draws from a fixed seed
batch, y = images[:8], labels[:8]
t_batch, eps_batch = torch.randint(0, N, (8,)), torch.randn(batch.shape)
with torch.no_grad():
    by_hand = F.mse_loss(model.denoise(schedule.add_noise(batch, eps_batch, t_batch), t_batch, y), eps_batch)
    library = model(batch, y, timesteps=t_batch, noise=eps_batch).loss
check("the denoising loss by hand == DiffusionUNet.forward's loss", by_hand, library)

# In training mode 10% of the labels become the null class (index n_classes): the same network
# then also learns eps(x_t) with no class, the unconditional branch classifier-free guidance needs.
# The sampler reads an average of recent weights (EMA), smoother than the last iterate; 0.99 here
# because the run is short (`bench/diffusion.py` trains the preset with 0.999).
steps, size = (8, 16) if args.quick else (240, 64)
model.train()
optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
ema = EMA(model, decay=0.99)
order, started = torch.randperm(len(images)), time.perf_counter()
for i in range(steps):
    pick = order[(i * size) % len(images) :][:size]
    loss = model(images[pick], labels[pick]).loss
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    ema.update(model)
    if i % max(1, steps // 8) == 0 or i == steps - 1:
        print(f"step {i:4d}  loss {loss.item():.4f}")
print(f"{steps} steps of {size} images in {time.perf_counter() - started:.1f} s")
model.load_state_dict({**model.state_dict(), **ema.state_dict()})  # sample from the average
model.eval()

# ---------------------------------------------------------------------------------------------
section("5. Sampling with guidance: the loop by hand, then sample(...)")
# Classifier-free guidance (Ho & Salimans 2022). The noise prediction is a scaled score,
# eps(x_t) = -sqrt(1 - abar) grad log p(x_t), and Bayes gives grad log p(x_t | y) = grad log p(x_t)
# + grad log p(y | x_t). So cond - uncond = eps(x_t, y) - eps(x_t) points along -grad log p(y | x_t):
# the direction an implicit classifier, learned for free by the class dropout, says makes x_t more
# of class y. Guidance pushes further along it, out = cond + w (cond - uncond), which samples
# roughly p(x | y) p(y | x)^w: sharper, more typical images, less variety. w = 0 is plain
# conditional sampling. diffusers writes uncond + s (cond - uncond), so its s is our 1 + w.
w, n_steps, seed = 3.0, (10 if args.quick else 50), 0
ids = torch.tensor([0, 5, 7, 9])
generator = torch.Generator().manual_seed(seed)
x = torch.randn((4, 1, 16, 16), generator=generator)  # x_T, drawn on the CPU, as sample() does
with torch.no_grad():
    for step_t in schedule.timesteps(n_steps):  # leading spacing, noisiest first
        both = model.denoise(torch.cat([x, x]), step_t, torch.cat([ids, torch.full_like(ids, tiny.null_class)]))
        cond, uncond = both.chunk(2)  # (4, 1, 16, 16) each
        out = cond + w * (cond - uncond)
        a_t = abar[step_t].item()
        prev_t = step_t - N // n_steps
        a_prev = abar[prev_t].item() if prev_t >= 0 else 1.0  # before step 0: the clean image
        guess = ((x - math.sqrt(1 - a_t) * out) / math.sqrt(a_t)).clamp(-1, 1)
        # the noise that goes with the clipped guess, not the network's own: with the raw output the
        # part of the guess past [-1, 1] would come back at the next step (sample()'s default)
        eps_of_guess = (x - math.sqrt(a_t) * guess) / math.sqrt(1 - a_t)
        x = math.sqrt(a_prev) * guess + math.sqrt(1 - a_prev) * eps_of_guess
library = sample(model, 4, steps=n_steps, sampler="ddim", guidance=w, labels=ids, seed=seed)
check(f"guided DDIM loop by hand ({n_steps} steps, w={w:g}) == sample(...)", x.clamp(-1, 1), library.images,
      atol=1e-5)  # fmt: skip
again = sample(model, 4, steps=n_steps, sampler="ddim", guidance=w, labels=ids, seed=seed)
check("the same seed gives the same images", again.images, library.images, atol=0.0)

# The strip: one sample from x_T to x_0, ten snapshots, with the model's x_0 guess under each. The
# guess settles on a shape long before the sample stops looking like noise: the coarse layout is
# decided at high noise, the detail at the end.
shown = class_names[5]
trajectory = sample(model, 1, steps=n_steps, guidance=w, labels=shown, seed=1, return_trajectory=True)
print(f"saved {save_strip(trajectory, args.out / 'strip.png', frames=10, scale=4)} (class {shown!r}, top: x_t, "
      "bottom: the x_0 guess)")
per_class = 2 if args.quick else 8
grid_ids = torch.arange(tiny.n_classes).repeat_interleave(per_class)  # one row per class
grid = sample(model, len(grid_ids), steps=n_steps, guidance=w, labels=grid_ids, seed=2)
grid_path = save_grid(grid.images, args.out / "class_grid.png", nrow=per_class, scale=4)
print(f"saved {grid_path} (one row per class: {', '.join(class_names)})")
