"""The diffusion family's configuration: one dataclass for the UNet and the noise schedule it learns.

The schedule lives in the model's config because a denoiser is only meaningful with the schedule
it was trained on: sampling reads ``num_train_timesteps``, the betas and ``prediction_type`` from
the checkpoint, so a user cannot pair weights with the wrong noise levels.

The UNet is ``len(channels)`` resolution levels; ``attention[i]`` puts self-attention after each
ResBlock of level ``i`` (the low resolutions, where the token count is small). ``n_classes > 0``
makes the model class-conditional with one extra embedding row, index ``n_classes``, for the
"null" class that classifier-free guidance uses as its unconditional branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import Backend
from glassformer.utils.config import ConfigError, ConfigMixin

BetaSchedule = Literal["linear", "squaredcos_cap_v2"]
Prediction = Literal["epsilon", "v_prediction"]
BETA_SCHEDULES: tuple[str, ...] = ("linear", "squaredcos_cap_v2")
PREDICTIONS: tuple[str, ...] = ("epsilon", "v_prediction")
FASHION_CLASSES: tuple[str, ...] = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip


@dataclass
class DiffusionConfig(ConfigMixin):
    image_size: int = 32
    in_channels: int = 1
    # space-to-depth stem: each patch_size x patch_size block of pixels becomes one pixel with
    # in_channels * patch_size**2 channels before the first convolution (pixel_unshuffle), and the
    # output is unfolded back (pixel_shuffle). 2 runs the whole UNet at a quarter of the pixels:
    # about 4x less compute per call for the same widths, what makes 1,000-step sampling CPU-sized
    patch_size: int = 1
    # per resolution level ("block_out_channels"): narrow where the pixels are many, since a CPU pays
    # for every multiply-add 1,000 times per DDPM sample (this shape: 2.7M parameters, 0.13 GMAC a call)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    attention: tuple[bool, ...] = (False, False, True, True)  # self-attention in level i (8x8 and 4x4 here)
    layers_per_block: int = 1  # ResBlocks per level going down (one more going up)
    mid_attention: bool = True
    head_dim: int = 32  # width of one attention head ("attention_head_dim")
    norm_groups: int = 8  # GroupNorm groups ("norm_num_groups")
    norm_eps: float = 1e-5
    time_embed_dim: int | None = None  # None: 4 * channels[0], as DDPM
    flip_sin_to_cos: bool = True  # the sinusoid is [cos, sin] (diffusers' UNet2DModel default)
    freq_shift: int = 0  # "downscale_freq_shift": frequencies exp(-ln(1e4) * i / (half - shift))
    dropout: float = 0.0
    n_classes: int = 0  # 0: unconditional
    class_names: tuple[str, ...] = ()  # names of the classes in label order (optional)
    class_dropout: float = 0.1  # training labels replaced by the null class at this rate
    num_train_timesteps: int = 1000
    beta_schedule: BetaSchedule = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: Prediction = "epsilon"
    clip_sample: bool = True  # clamp the predicted x_0 to [-clip_sample_range, clip_sample_range]
    clip_sample_range: float = 1.0
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.attention = tuple(bool(a) for a in self.attention)
        self.class_names = tuple(str(n) for n in self.class_names)
        self._check_sizes()
        self._check_schedule()
        self._check_classes()

    def _check_sizes(self) -> None:
        for name in ("image_size", "in_channels", "patch_size", "layers_per_block", "head_dim", "norm_groups",
                     "num_train_timesteps"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"DiffusionConfig.{name} must be a positive integer, got {value!r}")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ConfigError(f"DiffusionConfig.channels must be positive widths, got {self.channels}")
        if len(self.attention) != len(self.channels):
            raise ConfigError(
                f"DiffusionConfig.attention has {len(self.attention)} entries but channels has "
                f"{len(self.channels)}; give one True/False per resolution level"
            )
        if self.image_size % self.size_multiple:
            raise ConfigError(
                f"DiffusionConfig.image_size={self.image_size} must be divisible by patch_size * 2**(levels-1)="
                f"{self.size_multiple}: the stem folds patch_size pixels and each level but the last halves the rest"
            )
        for c in self.channels:
            if c % self.norm_groups:
                raise ConfigError(f"DiffusionConfig.channels entry {c} is not divisible by norm_groups={self.norm_groups}")
        attended = [c for c, a in zip(self.channels, self.attention) if a] + [self.channels[-1]] * self.mid_attention
        for c in attended:
            if c % self.head_dim:
                raise ConfigError(f"DiffusionConfig.channels entry {c} (an attention level) is not divisible by head_dim={self.head_dim}")
        if self.time_embed_dim is not None and self.time_embed_dim <= 0:
            raise ConfigError(f"DiffusionConfig.time_embed_dim must be positive or None, got {self.time_embed_dim}")
        if self.channels[0] % 2:
            raise ConfigError(f"DiffusionConfig.channels[0]={self.channels[0]} must be even (sin and cos halves)")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"DiffusionConfig.dropout must be in [0, 1), got {self.dropout}")

    def _check_schedule(self) -> None:
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"DiffusionConfig.beta_schedule={self.beta_schedule!r}; expected one of {BETA_SCHEDULES}")
        if self.prediction_type not in PREDICTIONS:
            raise ConfigError(f"DiffusionConfig.prediction_type={self.prediction_type!r}; expected one of {PREDICTIONS}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ConfigError(
                f"DiffusionConfig needs 0 < beta_start < beta_end < 1, got {self.beta_start} and {self.beta_end}"
            )
        if self.clip_sample_range <= 0:
            raise ConfigError(f"DiffusionConfig.clip_sample_range must be positive, got {self.clip_sample_range}")

    def _check_classes(self) -> None:
        if not isinstance(self.n_classes, int) or self.n_classes < 0:
            raise ConfigError(f"DiffusionConfig.n_classes must be an integer >= 0, got {self.n_classes!r}")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise ConfigError(
                f"DiffusionConfig.class_names has {len(self.class_names)} names but n_classes={self.n_classes}"
            )
        if not 0.0 <= self.class_dropout < 1.0:
            raise ConfigError(f"DiffusionConfig.class_dropout must be in [0, 1), got {self.class_dropout}")

    @property
    def temb_dim(self) -> int:
        """Width of the time (plus class) embedding every ResBlock reads."""
        return self.time_embed_dim or 4 * self.channels[0]

    @property
    def size_multiple(self) -> int:
        """What image sides must be a multiple of: the stem's patch, then one halving per level but the last."""
        return self.patch_size * 2 ** (len(self.channels) - 1)

    @property
    def null_class(self) -> int:
        """The label index of "no class" (classifier-free guidance's unconditional branch)."""
        return self.n_classes


def ddpm_fashion() -> DiffusionConfig:
    """Fashion-MNIST padded to 32x32, class-conditional: small enough to sample 1,000 steps on a CPU.

    The 2x2 stem runs the UNet at 16x16 (levels 16, 8, 4 pixels; attention at 8 and 4): 0.7M
    parameters, about 20 MMAC a call, ~1 ms an image on one AVX2 core pair at batch 256."""
    return DiffusionConfig(
        n_classes=10, class_names=FASHION_CLASSES, patch_size=2, channels=(16, 32, 64),
        attention=(False, True, True), head_dim=16, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
    )  # fmt: skip


def tiny(config: DiffusionConfig) -> DiffusionConfig:
    """The toy twin: same choices (conditioning, schedule, attention pattern), 16x16, widths 8 and 16."""
    levels = len(config.channels)
    return config.replace(
        image_size=8 * config.patch_size, channels=tuple(8 if i == 0 else 16 for i in range(levels)), head_dim=8, norm_groups=4,
        num_train_timesteps=50,
    )  # fmt: skip
