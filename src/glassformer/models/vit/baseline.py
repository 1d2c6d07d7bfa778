"""A small ResNet-style CNN: the baseline the ViT must beat on Fashion-MNIST under the same budget.

Convolutions build in what a ViT has to learn from data (locality, translation equivariance),
which is why CNNs win at small budgets. The network: a 3x3 stem, stages of basic residual blocks
(He et al. 2016: two 3x3 conv + BatchNorm, an identity or 1x1 projection shortcut), each stage
after the first halving the resolution and widening; global average pooling; a linear head. Its
``forward`` takes the ViT's batch and computes the same loss (label smoothing, soft targets), so
the same training engine trains both. It is no registered family: the benchmark imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import ModelBase, ModelOutput
from glassformer.models.vit.model import accuracy, check_pixels, classification_loss
from glassformer.utils.config import ConfigError, ConfigMixin


@dataclass
class CNNConfig(ConfigMixin):
    in_channels: int = 1
    num_labels: int = 10
    widths: tuple[int, ...] = (32, 64, 128)  # channels of each stage; stages after the first stride 2
    blocks_per_stage: int = 2
    dropout: float = 0.1  # before the head
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        for name in ("in_channels", "num_labels", "blocks_per_stage"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"CNNConfig.{name} must be a positive integer, got {value!r}")
        if not self.widths or any(not isinstance(w, int) or w <= 0 for w in self.widths):
            raise ConfigError(f"CNNConfig.widths must be positive channel counts, got {self.widths!r}")
        for name in ("dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"CNNConfig.{name} must be in [0, 1), got {getattr(self, name)}")


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; the shortcut projects when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C_in, H, W) -> (B, C_out, H / stride, W / stride)
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class CNNBaseline(ModelBase):
    """The ResNet-style classifier ``CNNConfig`` describes (0.7M parameters by default)."""

    family = "cnn-baseline"  # tags its saved folders; CNNBaseline.load opens them (not load_model)
    config_class = CNNConfig

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        c = config
        first = c.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(c.in_channels, first, 3, padding=1, bias=False), nn.BatchNorm2d(first), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = first
        for stage, width in enumerate(c.widths):
            for i in range(c.blocks_per_stage):
                blocks.append(BasicBlock(c_in, width, stride=2 if stage > 0 and i == 0 else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c_in, c.num_labels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for block in blocks:  # each residual branch starts as the identity (Goyal et al. 2017)
            nn.init.zeros_(block.bn2.weight)

    def features(self, pixel_values: Tensor) -> Tensor:
        """The pooled ``(B, C_last)`` activations the head reads: what a Frechet distance compares."""
        x = check_pixels(pixel_values, self.config.in_channels, self.stem[0].weight.dtype)
        x = self.blocks(self.stem(x))  # (B, C_last, H / 2^(stages-1), W / 2^(stages-1))
        return x.mean(dim=(2, 3))

    def forward(self, pixel_values: Tensor, labels: Tensor | None = None) -> ModelOutput:
        """``pixel_values`` ``(B, C, H, W)`` float; ``labels`` class ids ``(B,)`` or soft targets ``(B, K)``."""
        pooled = self.features(pixel_values)  # (B, C_last)
        out = ModelOutput(logits=self.head(self.dropout(pooled)))  # (B, K)
        if labels is not None:
            out.loss = classification_loss(out.logits, labels, self.config.label_smoothing)
            out.metrics["accuracy"] = accuracy(out.logits, labels)
        return out

