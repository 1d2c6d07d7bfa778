"""CLIP's configuration (Radford et al. 2021): a ViT image tower, a causal text tower, one shared space.

The image tower is a whole ``ViTConfig`` (``vision``), the CLIP way: no classification head, a
bias-free patch projection, a LayerNorm before the first block (``pre_norm``) and quick GELU.
The text tower's fields use the names of ``docs/config-vocabulary.md`` (``dim``, ``n_layers``,
``max_seq_len`` is the 77-token context). ``projection_dim`` is the width of the shared space.

``duplicate_captions`` says what the loss does with pairs of a batch that share a caption
(given as ``caption_ids`` to ``forward``; without them every pair is its own class):

- ``"negatives"``: plain InfoNCE, they are pushed apart like any other pair (what
  Hugging Face's ``CLIPModel`` computes);
- ``"mask"``: in-batch de-duplication: the other pairs with the query's caption are left out
  of its softmax, so they are neither pushed apart nor pulled together;
- ``"soft_targets"``: caption-aware targets: the probability of the right answer is spread
  evenly over every pair with the query's caption, so all of them are pulled together.

Token-for-token equal captions get equal text embeddings, and then plain InfoNCE and soft
targets are the same function (each row's terms just swap places): both leave a floor of
``ln(copies)`` that no model can go below. Only ``"mask"`` removes it. Soft targets differ where
one caption id covers different wordings (paraphrases of one composition). ``"mask"`` is the
default: it helps in both cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from glassformer.models.vit.config import ViTConfig
from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin

DuplicateCaptions = Literal["negatives", "mask", "soft_targets"]
DUPLICATE_CAPTIONS: tuple[str, ...] = ("negatives", "mask", "soft_targets")
TEXT_ACTIVATIONS: tuple[str, ...] = ("quick_gelu", "gelu", "gelu_tanh", "relu")


def clip_vision(**fields: Any) -> ViTConfig:
    """A CLIP image tower: head-less ViT with CLIP's pre-norm, bias-free patches and quick GELU."""
    base: dict[str, Any] = dict(num_labels=0, activation="quick_gelu", norm_eps=1e-5, patch_bias=False,
                                pre_norm=True, pooling="cls", pooler=False)  # fmt: skip
    return ViTConfig(**{**base, **fields})


def _vit_b32() -> ViTConfig:
    return clip_vision(image_size=224, patch_size=32, dim=768, n_layers=12, n_heads=12, ffn_dim=3072)


@dataclass
class CLIPConfig(ConfigMixin):
    vision: ViTConfig = field(default_factory=_vit_b32)  # the image tower
    vocab_size: int = 49408  # CLIP's BPE (glassformer.tokenizers.clip)
    dim: int = 512  # the text tower's width
    n_layers: int = 12
    n_heads: int = 8
    ffn_dim: int = 2048
    max_seq_len: int = 77  # the text context, SOT and EOT included
    activation: Literal["quick_gelu", "gelu", "gelu_tanh", "relu"] = "quick_gelu"
    norm_eps: float = 1e-5
    attn_dropout: float = 0.0
    projection_dim: int = 512  # the shared image-text space
    logit_scale_init: float = math.log(1 / 0.07)  # the learnable log temperature starts at 1/0.07
    max_logit_scale: float = 100.0  # exp(logit_scale) is clamped here, as OpenAI trains it
    duplicate_captions: DuplicateCaptions = "mask"
    pad_token_id: int = 49407  # CLIP pads with EOT; the text feature is read at the first EOT
    bos_token_id: int = 49406
    eos_token_id: int = 49407
    init_std: float = 0.02
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):  # from config.json
            self.vision = ViTConfig.from_dict(self.vision, source="CLIPConfig.vision")
        if not isinstance(self.vision, ViTConfig):
            raise ConfigError(f"CLIPConfig.vision must be a ViTConfig (or its dict), got {type(self.vision).__name__}")
        if self.vision.num_labels:
            raise ConfigError(f"CLIPConfig.vision.num_labels={self.vision.num_labels}: the image tower has no head (0)")
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len", "projection_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"CLIPConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"CLIPConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(f"CLIPConfig.{name}={value} is outside the vocabulary (vocab_size={self.vocab_size})")
        self._check_choices()

    def _check_choices(self) -> None:
        if self.activation not in TEXT_ACTIVATIONS:
            raise ConfigError(f"CLIPConfig.activation={self.activation!r}; expected one of {TEXT_ACTIVATIONS}")
        if self.duplicate_captions not in DUPLICATE_CAPTIONS:
            raise ConfigError(
                f"CLIPConfig.duplicate_captions={self.duplicate_captions!r}; expected one of {DUPLICATE_CAPTIONS}"
            )
        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"CLIPConfig.attn_backend={self.attn_backend!r}; expected one of {BACKENDS}")
        if not 0.0 <= self.attn_dropout < 1.0:
            raise ConfigError(f"CLIPConfig.attn_dropout must be in [0, 1), got {self.attn_dropout}")
        if self.max_logit_scale <= 0 or math.exp(self.logit_scale_init) > self.max_logit_scale:
            raise ConfigError(
                f"CLIPConfig: exp(logit_scale_init={self.logit_scale_init}) must lie in (0, max_logit_scale="
                f"{self.max_logit_scale}]"
            )
        if self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError(f"CLIPConfig.norm_eps and init_std must be positive, got {self.norm_eps}, {self.init_std}")


def clip_shapes() -> CLIPConfig:
    """What the synthetic shapes experiment trains on CPU: 64x64 pictures in 8x8 patches (64 + [CLS]),
    both towers 4 blocks of width 128 with 4 heads, a 128-wide shared space; captions of at most
    32 tokens (the set's longest is about 20)."""
    vision = clip_vision(image_size=64, patch_size=8, dim=128, n_layers=4, n_heads=4, ffn_dim=512)
    return CLIPConfig(vision=vision, dim=128, n_layers=4, n_heads=4, ffn_dim=512, max_seq_len=32, projection_dim=128)


def clip_vit_b32() -> CLIPConfig:
    """OpenAI's ViT-B/32 CLIP (openai/clip-vit-base-patch32's shape): 224x224 in 32x32 patches, a
    768-wide 12-block image tower, a 512-wide 12-block text tower, a 512-wide shared space (151M)."""
    return CLIPConfig()


def tiny(config: CLIPConfig) -> CLIPConfig:
    """The toy twin: both towers 2 blocks of width 32 on a 4x4 patch grid, 99 tokens, 16 positions."""
    size = min(config.vision.image_size, 32)
    vision = config.vision.replace(image_size=size, patch_size=size // 4, dim=32, n_layers=2, n_heads=4, ffn_dim=64)
    return config.replace(vision=vision, vocab_size=99, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_seq_len=16,
                          projection_dim=24, pad_token_id=98, bos_token_id=97, eos_token_id=98)  # fmt: skip
