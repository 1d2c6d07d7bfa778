"""The Vision Transformer's configuration (Dosovitskiy et al. 2020) and its presets.

An image is cut into ``patch_size`` x ``patch_size`` squares; each becomes one token. So the
sequence is ``(image_size // patch_size) ** 2`` patches, plus one ``[CLS]`` token when
``pooling="cls"`` (the classifier reads it) and none with ``pooling="mean"`` (the classifier
reads the mean of the patch tokens). The names follow ``docs/config-vocabulary.md``; the label
count is ``num_labels`` as in BERT, and ``num_labels=0`` is a head-less encoder (HF ``ViTModel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from glassformer.nn.attention import BACKENDS, Backend
from glassformer.utils.config import ConfigError, ConfigMixin

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass
class ViTConfig(ConfigMixin):
    image_size: int = 224  # square images: height = width
    patch_size: int = 16
    in_channels: int = 3
    num_labels: int = 1000  # 0: no classification head (an image encoder)
    label_names: tuple[str, ...] = ()  # class names in label-id order (optional)
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 3072
    activation: Literal["gelu", "gelu_tanh", "quick_gelu", "relu"] = "gelu"
    norm_eps: float = 1e-12  # Hugging Face's ViT checkpoints; timm's use 1e-6
    dropout: float = 0.0  # on the embeddings and residual branches
    attn_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth: the rate of the last block, rising linearly from 0
    pooling: Literal["cls", "mean"] = "cls"
    pooler: bool = False  # HF ViTModel's dense + tanh on [CLS] (pooler_output); classifiers skip it
    patch_bias: bool = True  # CLIP's image tower has a bias-free patch projection
    pre_norm: bool = False  # CLIP's extra LayerNorm on the embeddings, before the first block
    label_smoothing: float = 0.0
    interpolate_positions: bool = False  # another image size: bicubic positions, else an error
    init_std: float = 0.02
    attn_backend: Backend = "sdpa"

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "in_channels", "dim", "n_layers", "n_heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ViTConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_labels, int) or self.num_labels < 0:
            raise ConfigError(f"ViTConfig.num_labels must be >= 0 (0: no head), got {self.num_labels!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"ViTConfig.image_size={self.image_size} is not divisible by patch_size={self.patch_size}: "
                "pick a patch size that tiles the image"
            )
        if self.dim % self.n_heads:
            raise ConfigError(f"ViTConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        self._check_choices()
        self._check_rates()
        if self.label_names:
            self.label_names = tuple(str(n) for n in self.label_names)
            if len(self.label_names) != self.num_labels:
                raise ConfigError(
                    f"ViTConfig.label_names has {len(self.label_names)} names but num_labels={self.num_labels}"
                )

    def _check_choices(self) -> None:
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"ViTConfig.pooling={self.pooling!r}; expected 'cls' or 'mean'")
        if self.activation not in ("gelu", "gelu_tanh", "quick_gelu", "relu"):
            raise ConfigError(
                f"ViTConfig.activation={self.activation!r}; expected 'gelu', 'gelu_tanh', 'quick_gelu' or 'relu'"
            )
        if self.attn_backend not in BACKENDS:
            raise ConfigError(f"ViTConfig.attn_backend={self.attn_backend!r}; expected one of {BACKENDS}")
        if self.pooler and self.pooling != "cls":
            raise ConfigError("ViTConfig.pooler=True reads the [CLS] token: it needs pooling='cls'")

    def _check_rates(self) -> None:
        for name in ("dropout", "attn_dropout", "drop_path", "label_smoothing"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"ViTConfig.{name} must be in [0, 1), got {value}")
        if self.norm_eps <= 0:
            raise ConfigError(f"ViTConfig.norm_eps must be positive, got {self.norm_eps}")
        if self.init_std <= 0:
            raise ConfigError(f"ViTConfig.init_std must be positive, got {self.init_std}")

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the [CLS] token, when the model has one."""
        return 1 if self.pooling == "cls" else 0

    @property
    def seq_len(self) -> int:
        """Tokens the encoder sees at the trained image size (rows of the position table)."""
        return self.num_patches + self.num_prefix_tokens


def vit_fashion() -> ViTConfig:
    """What the Fashion-MNIST experiment trains on one CPU core in an hour: 16 patches of 7x7 + [CLS].

    Width 128, 6 blocks, 4 heads and a 2x MLP (0.8M parameters). Patches of 4 (49 tokens) cost
    about 3x more per image, so within the benchmark's budget they see a third of the images and
    end behind (``bench/vit.py``'s sweep); stochastic depth and label smoothing regularise.
    """
    return ViTConfig(
        image_size=28, patch_size=7, in_channels=1, num_labels=10, label_names=FASHION_MNIST_CLASSES,
        dim=128, n_layers=6, n_heads=4, ffn_dim=256, norm_eps=1e-6, drop_path=0.1, label_smoothing=0.1,
    )  # fmt: skip


def vit_ti16() -> ViTConfig:
    """ViT-Ti/16 (DeiT-tiny's shape): 224x224, width 192, 12 blocks, 3 heads (5.7M)."""
    return ViTConfig(dim=192, n_layers=12, n_heads=3, ffn_dim=768)


def vit_s16() -> ViTConfig:
    """ViT-S/16: 224x224, width 384, 12 blocks, 6 heads (22M)."""
    return ViTConfig(dim=384, n_layers=12, n_heads=6, ffn_dim=1536)


def vit_b16() -> ViTConfig:
    """ViT-B/16 (google/vit-base-patch16-224's shape): width 768, 12 blocks, 12 heads (86M)."""
    return ViTConfig()


def tiny(config: ViTConfig) -> ViTConfig:
    """The toy twin: 2 blocks of width 32 on a 4x4 grid of patches, same channels, pooling and head.

    The image shrinks to at most 32 pixels (28 stays 28), so the twin runs in milliseconds."""
    size = min(config.image_size, 32)
    return config.replace(image_size=size, patch_size=size // 4, dim=32, n_layers=2, n_heads=4, ffn_dim=64)
