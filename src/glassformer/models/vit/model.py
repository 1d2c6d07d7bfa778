"""The Vision Transformer (Dosovitskiy et al. 2020): an image as a sequence of patches.

Reading order: the patch embedding (a strided convolution, which is ``patchify`` followed by one
linear map), the [CLS] token and the learned positions, the pre-norm encoder blocks from
``glassformer.nn`` (exact GELU, biases everywhere, as Hugging Face's ViT), the final norm, then
the pooled vector ([CLS] or the mean of the patches) and the classification head.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import IGNORE_INDEX, ModelBase, ModelOutput
from glassformer.models.vit.config import ViTConfig
from glassformer.nn.blocks import TransformerBlock
from glassformer.nn.norms import LayerNorm


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``(B, C, H, W) -> (B, N, C * p * p)``: the patches in row-major order, each flattened.

    The flattening order (channel, row, column) is the order of a ``Conv2d`` weight
    ``(dim, C, p, p)``, so ``patchify(x, p) @ conv.weight.flatten(1).T + conv.bias`` equals
    ``conv(x).flatten(2).transpose(1, 2)``: the patch embedding is a linear map on patches."""
    if images.dim() != 4:
        raise ValueError(f"patchify expects images of shape (B, C, H, W); got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % patch_size or w % patch_size:
        raise ValueError(f"image of {h}x{w} pixels is not a whole number of {patch_size}x{patch_size} patches")
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)  # (B, N, C*p*p)


def interpolate_positions(positions: Tensor, prefix: int, grid_h: int, grid_w: int) -> Tensor:
    """Resize a ``(1, prefix + g*g, C)`` position table to a ``grid_h x grid_w`` patch grid.

    The patch rows are laid out as the square image they were trained on and resized bicubically
    (``align_corners=False``, to an output size, not a scale factor), as ``transformers``'
    ``ViTEmbeddings.interpolate_pos_encoding`` does; the [CLS] row is kept as it is."""
    head, grid = positions[:, :prefix], positions[:, prefix:]  # (1, prefix, C), (1, g*g, C)
    side = int(round(grid.shape[1] ** 0.5))
    if side * side != grid.shape[1]:
        raise ValueError(f"the position table has {grid.shape[1]} patch rows, not a square grid: cannot resize it")
    if (grid_h, grid_w) == (side, side):
        return positions
    dim = grid.shape[-1]
    grid = grid.reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, C, g, g)
    grid = F.interpolate(grid, size=(grid_h, grid_w), mode="bicubic", align_corners=False)  # (1, C, h, w)
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)  # (1, h*w, C)
    return torch.cat([head, grid], dim=1)


def classification_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy for class ids ``(B,)`` (``-100`` skipped) or soft targets ``(B, K)`` (mixup, cutmix).

    Soft targets must be probabilities over the ``K`` classes; label smoothing applies to both."""
    n, k = logits.shape
    if labels.dim() == 2:
        if labels.shape != logits.shape or not labels.is_floating_point():
            raise ValueError(
                f"soft targets must be float probabilities of shape (batch, num_labels)={n, k}; "
                f"got {tuple(labels.shape)} {labels.dtype}"
            )
        return F.cross_entropy(logits, labels.to(logits.dtype), label_smoothing=label_smoothing)
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(
            f"labels must be class ids of shape (batch,)=({n},) or soft targets (batch, num_labels)=({n}, {k}); "
            f"got {tuple(labels.shape)} {labels.dtype}"
        )
    real = labels[labels != IGNORE_INDEX]
    if real.numel() and (int(real.max()) >= k or int(real.min()) < 0):
        raise ValueError(f"labels must lie in [0, num_labels={k}); got values {int(real.min())}..{int(real.max())}")
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, ignore_index=IGNORE_INDEX)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Top-1 accuracy against class ids, or against the most likely class of soft targets."""
    target = labels.argmax(-1) if labels.dim() == 2 else labels
    keep = target != IGNORE_INDEX
    if not keep.any():
        return logits.new_zeros(())  # every label ignored: nothing to score
    return (logits.argmax(-1)[keep] == target[keep]).float().mean().detach()


def check_pixels(pixel_values: Tensor, in_channels: int, dtype: torch.dtype) -> Tensor:
    """``pixel_values`` as a float ``(B, in_channels, H, W)`` batch of the model's dtype.

    A grayscale batch for a colour model is repeated over the channels, with a warning."""
    if not isinstance(pixel_values, Tensor):
        raise TypeError(f"pixel_values must be a (batch, channels, height, width) tensor; got {type(pixel_values).__name__}")
    if pixel_values.dim() != 4:
        hint = ": add the batch dimension with x.unsqueeze(0)" if pixel_values.dim() == 3 else ""
        raise ValueError(f"pixel_values must be (batch, channels, height, width); got {tuple(pixel_values.shape)}{hint}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be floating point, got {pixel_values.dtype}: convert the image to float "
            "and normalise it (e.g. x.float() / 255, then the dataset's mean and std)"
        )
    channels = pixel_values.shape[1]
    if channels != in_channels:
        if channels != 1:
            raise ValueError(f"pixel_values have {channels} channels but the model takes {in_channels}")
        warnings.warn(
            f"a 1-channel (grayscale) batch given to a {in_channels}-channel model: repeating it over the channels",
            stacklevel=3,
        )
        pixel_values = pixel_values.expand(-1, in_channels, -1, -1)
    return pixel_values.to(dtype)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a whole residual branch per sample.

    Kept branches are scaled by ``1 / (1 - p)`` so the expected output is unchanged at test time."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1.0 - self.p)  # (B, 1, 1)
        return x * keep / (1.0 - self.p)


class ViTBlock(TransformerBlock):
    """glassformer's pre-norm block with stochastic depth on both residual branches."""

    def __init__(self, dim: int, n_heads: int, *, drop_path: float = 0.0, **kwargs) -> None:
        super().__init__(dim, n_heads, norm_position="pre", **kwargs)
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: Tensor, norm: nn.Module, sublayer: Callable) -> tuple[Tensor, Tensor | None]:
        out, weights = sublayer(norm(x))
        return x + self.drop_path(self.dropout(out)), weights


@dataclass
class Encoded:
    """What :meth:`ViT.encode` returns."""

    hidden: Tensor  # (B, T, C) after the final norm
    attentions: list[Tensor] | None = None  # per layer (B, H, T, T), when asked
    layer_states: tuple[Tensor, ...] | None = None  # the embeddings, then each block's output (B, T, C)


class ViT(ModelBase):
    """The Vision Transformer with a linear classification head (none when ``num_labels=0``)."""

    family = "vit"
    config_class = ViTConfig

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        c = config
        self.patch_embed = nn.Conv2d(c.in_channels, c.dim, c.patch_size, stride=c.patch_size, bias=c.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim)) if c.pooling == "cls" else None
        self.positions = nn.Parameter(torch.zeros(1, c.seq_len, c.dim))
        self.dropout = nn.Dropout(c.dropout)
        self.pre_norm = LayerNorm(c.dim, eps=c.norm_eps) if c.pre_norm else None
        rates = [c.drop_path * i / max(c.n_layers - 1, 1) for i in range(c.n_layers)]  # deeper: dropped more often
        self.blocks = nn.ModuleList(
            ViTBlock(
                c.dim, c.n_heads, drop_path=rate, ffn_dim=c.ffn_dim, activation=c.activation, norm="layernorm",
                norm_eps=c.norm_eps, bias=True, dropout=c.dropout, attn_dropout=c.attn_dropout, backend=c.attn_backend,
            )
            for rate in rates
        )  # fmt: skip
        self.norm = LayerNorm(c.dim, eps=c.norm_eps)
        self.pooler = nn.Linear(c.dim, c.dim) if c.pooler else None
        self.head = nn.Linear(c.dim, c.num_labels) if c.num_labels else None
        self.apply(self._init_weights)
        for p in (self.cls_token, self.positions):
            if p is not None:
                nn.init.trunc_normal_(p, std=c.init_std)

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal weights (std ``init_std``), zero biases, as HF ViT and timm."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(module.weight, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # -- pieces --------------------------------------------------------------------------------

    def embed(self, pixel_values: Tensor, interpolate_pos_encoding: bool | None = None) -> Tensor:
        """Patches, [CLS] and positions: ``(B, C_in, H, W) -> (B, T, C)``."""
        c = self.config
        x = check_pixels(pixel_values, c.in_channels, self.patch_embed.weight.dtype)
        h, w = x.shape[-2:]
        if h % c.patch_size or w % c.patch_size:
            raise ValueError(
                f"an image of {h}x{w} pixels is not a whole number of {c.patch_size}x{c.patch_size} patches; "
                f"resize it to {c.image_size}x{c.image_size}"
            )
        interpolate = c.interpolate_positions if interpolate_pos_encoding is None else interpolate_pos_encoding
        if (h, w) != (c.image_size, c.image_size) and not interpolate:
            raise ValueError(
                f"the image is {h}x{w} but this model was built for {c.image_size}x{c.image_size}: resize it, or "
                "interpolate the positions (config interpolate_positions=True, or interpolate_pos_encoding=True)"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, C)
        pos = self.positions
        if interpolate:
            pos = interpolate_positions(pos, c.num_prefix_tokens, h // c.patch_size, w // c.patch_size)
        return self.dropout(x + pos)  # (B, T, C)

    def encode(
        self,
        pixel_values: Tensor,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool | None = None,
    ) -> Encoded:
        """The encoder's normed output; asking for attentions switches every block to eager attention."""
        x = self.embed(pixel_values, interpolate_pos_encoding)  # (B, T, C)
        if self.pre_norm is not None:
            x = self.pre_norm(x)  # (B, T, C)
        states: list[Tensor] = [x]
        attentions: list[Tensor] = []
        for block in self.blocks:
            out = block(x, return_weights=output_attentions)
            x = out.hidden  # (B, T, C)
            states.append(x)
            if output_attentions:
                attentions.append(out.self_weights)  # (B, H, T, T)
        return Encoded(
            self.norm(x), attentions if output_attentions else None, tuple(states) if output_hidden_states else None
        )

    def pool(self, hidden: Tensor) -> Tensor:
        """One vector per image ``(B, C)``: the [CLS] token or the mean of the patch tokens."""
        return hidden[:, 0] if self.config.pooling == "cls" else hidden.mean(dim=1)

    def pooled_output(self, hidden: Tensor) -> Tensor:
        """HF ``ViTModel``'s ``pooler_output``: ``tanh(dense(h[CLS]))`` (needs ``pooler=True``)."""
        if self.pooler is None:
            raise ValueError("this ViT has no pooler (config pooler=False); use pool() for the [CLS] vector")
        return torch.tanh(self.pooler(hidden[:, 0]))  # (B, C)

    # -- forward -------------------------------------------------------------------------------

    def forward(
        self,
        pixel_values: Tensor,
        labels: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        interpolate_pos_encoding: bool | None = None,
    ) -> ModelOutput:
        """``labels``: class ids ``(B,)`` or soft targets ``(B, num_labels)``.

        ``hidden_states`` is the normed encoder output ``(B, T, C)``; with ``output_hidden_states``
        it is instead the tuple of ``n_layers + 1`` states Hugging Face returns (the embeddings, then
        each block's output, the last one before the final norm)."""
        enc = self.encode(pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        out = ModelOutput(
            hidden_states=enc.layer_states if output_hidden_states else enc.hidden, attentions=enc.attentions
        )
        if self.head is None:
            if labels is not None:
                raise ValueError("this ViT has no classification head (num_labels=0) and takes no labels")
            return out
        out.logits = self.head(self.pool(enc.hidden))  # (B, num_labels)
        if labels is not None:
            out.loss = classification_loss(out.logits, labels, self.config.label_smoothing)
            out.metrics["accuracy"] = accuracy(out.logits, labels)
        return out
