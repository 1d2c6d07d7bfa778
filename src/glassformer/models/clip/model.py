"""CLIP (Radford et al. 2021): an image tower and a text tower trained to agree on which caption
belongs to which picture.

Reading order: the text tower (token + learned position embeddings, a causal pre-norm stack from
``glassformer.nn``, the final norm, and the state at the first end-of-text token as the text's
feature), the image tower (glassformer's ViT, whose normed [CLS] state is the image's feature),
the two bias-free projections into one space, L2 normalisation, and the similarity: cosines
times a learned scale ``exp(logit_scale)`` (clamped at ``max_logit_scale``). The loss is the
symmetric InfoNCE of :func:`contrastive_loss`: each caption must pick its image out of the batch
and each image its caption.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glassformer.models.base import ModelBase, ModelOutput, check_token_ids
from glassformer.models.clip.config import DUPLICATE_CAPTIONS, CLIPConfig, DuplicateCaptions
from glassformer.models.vit.model import ViT
from glassformer.nn.blocks import TransformerStack
from glassformer.nn.masks import build_attention_mask


def _check_caption_ids(caption_ids: Tensor, n: int) -> Tensor:
    if not isinstance(caption_ids, Tensor) or caption_ids.shape != (n,) or caption_ids.is_floating_point():
        shape = tuple(caption_ids.shape) if isinstance(caption_ids, Tensor) else type(caption_ids).__name__
        raise ValueError(
            f"caption_ids must be one integer id per pair, shape ({n},) (equal ids: the same caption); got {shape}"
        )
    return caption_ids


def contrastive_loss(
    logits_per_text: Tensor, caption_ids: Tensor | None = None, duplicates: DuplicateCaptions = "mask"
) -> Tensor:
    """Symmetric InfoNCE over a ``(B, B)`` similarity matrix whose diagonal holds the true pairs.

    ``logits_per_text[i, j]`` scores caption ``i`` against image ``j``. The loss is the mean of
    the caption->image and the image->caption cross-entropies. ``caption_ids`` ``(B,)`` marks pairs
    with the same caption; ``duplicates`` says what happens to them (``CLIPConfig`` explains
    ``"negatives"``, ``"mask"`` and ``"soft_targets"``)."""
    n = logits_per_text.shape[0]
    if logits_per_text.dim() != 2 or logits_per_text.shape[1] != n:
        raise ValueError(f"the loss needs as many captions as images, a (B, B) matrix; got {tuple(logits_per_text.shape)}")
    if duplicates not in DUPLICATE_CAPTIONS:
        raise ValueError(f"duplicates={duplicates!r}; expected one of {DUPLICATE_CAPTIONS}")
    logits = logits_per_text.float()
    targets: Tensor = torch.arange(n, device=logits.device)
    if caption_ids is not None and duplicates != "negatives":
        ids = _check_caption_ids(caption_ids, n).to(logits.device)
        same = ids[:, None] == ids[None, :]  # (B, B), symmetric
        if duplicates == "mask":
            others = same & ~torch.eye(n, dtype=torch.bool, device=logits.device)
            logits = logits.masked_fill(others, torch.finfo(logits.dtype).min)  # out of every softmax
        else:
            targets = same.float() / same.sum(dim=1, keepdim=True)  # (B, B), rows (and columns) sum to 1
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _image_to_text_accuracy(logits_per_image: Tensor, caption_ids: Tensor | None) -> Tensor:
    """How often an image's best caption in the batch is its own (or one with the same caption id)."""
    best = logits_per_image.argmax(dim=1)  # (B,)
    ids = torch.arange(best.shape[0], device=best.device) if caption_ids is None else caption_ids.to(best.device)
    return (ids[best] == ids).float().mean().detach()


@dataclass
class CLIPOutput(ModelOutput):
    """``logits`` is ``logits_per_image`` ``(B_images, B_texts)``; the embeddings are L2-normalised."""

    logits_per_text: Tensor | None = None  # (B_texts, B_images)
    image_embeds: Tensor | None = None  # (B_images, projection_dim)
    text_embeds: Tensor | None = None  # (B_texts, projection_dim)


class CLIP(ModelBase):
    """Image tower (ViT), text tower (causal transformer), projections and a learned temperature."""

    family = "clip"
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__(config)
        c = config
        self.vision = ViT(c.vision)
        self.token_embed = nn.Embedding(c.vocab_size, c.dim)
        self.text_positions = nn.Embedding(c.max_seq_len, c.dim)
        self.text = TransformerStack(
            c.n_layers, c.dim, c.n_heads, ffn_dim=c.ffn_dim, activation=c.activation, norm="layernorm",
            norm_eps=c.norm_eps, norm_position="pre", bias=True, attn_dropout=c.attn_dropout, backend=c.attn_backend,
        )  # fmt: skip
        self.visual_projection = nn.Linear(c.vision.dim, c.projection_dim, bias=False)
        self.text_projection = nn.Linear(c.dim, c.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(c.logit_scale_init)))
        self._init_text()

    def _init_text(self) -> None:
        """Normal weights (std ``init_std``; positions 0.01, as OpenAI), zero biases; the ViT inits itself."""
        std = self.config.init_std
        for module in (*self.text.modules(), self.text_projection, self.visual_projection):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.token_embed.weight, std=std)
        nn.init.normal_(self.text_positions.weight, std=0.01)

    # -- the text tower ------------------------------------------------------------------------

    def text_states(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The text tower's normed states ``(B, T, C)`` (HF ``text_model``'s ``last_hidden_state``)."""
        c = self.config
        check_token_ids(input_ids, c.vocab_size, "input_ids", "encode captions with glassformer.tokenizers.clip")
        b, t = input_ids.shape
        if t > c.max_seq_len:
            raise ValueError(
                f"input_ids has {t} positions but the text tower has {c.max_seq_len}: truncate the captions "
                f"(CLIPTokenizer.encode_captions(texts, context_length={c.max_seq_len}) cuts and warns)"
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (b, t):
            raise ValueError(f"attention_mask must have the shape of input_ids {(b, t)}, got {tuple(attention_mask.shape)}")
        positions = torch.arange(t, device=input_ids.device)
        x = self.token_embed(input_ids) + self.text_positions(positions)  # (B, T, C)
        mask = build_attention_mask(t, t, causal=True, attention_mask=attention_mask, device=x.device)
        return self.text(x, mask=mask).hidden  # (B, T, C)

    def end_of_text(self, input_ids: Tensor) -> Tensor:
        """The position of each row's first end-of-text token ``(B,)``; its state is the text feature."""
        is_end = input_ids == self.config.eos_token_id  # (B, T)
        missing = (~is_end.any(dim=1)).nonzero().flatten().tolist()
        if missing:
            raise ValueError(
                f"input_ids rows {missing[:5]} hold no end-of-text token (id {self.config.eos_token_id}); frame each "
                "caption as SOT ... EOT (CLIPTokenizer.encode_captions does)"
            )
        return is_end.int().argmax(dim=1)  # (B,)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Projected, not yet normalised text features ``(B, P)`` (HF ``get_text_features``)."""
        states = self.text_states(input_ids, attention_mask)  # (B, T, C)
        pooled = states[torch.arange(states.shape[0], device=states.device), self.end_of_text(input_ids)]  # (B, C)
        return self.text_projection(pooled)  # (B, P)

    # -- the image tower -----------------------------------------------------------------------

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """Projected, not yet normalised image features ``(B, P)`` (HF ``get_image_features``)."""
        hidden = self.vision.encode(pixel_values).hidden  # (B, T, C), normed: [CLS] is HF's post_layernorm
        return self.visual_projection(self.vision.pool(hidden))  # (B, P)

    # -- the shared space ----------------------------------------------------------------------

    def encode_image(self, pixel_values: Tensor) -> Tensor:
        """Unit-length image embeddings ``(B, P)``: what retrieval compares."""
        return F.normalize(self.image_features(pixel_values), dim=-1)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Unit-length text embeddings ``(B, P)``."""
        return F.normalize(self.text_features(input_ids, attention_mask), dim=-1)

    def scale(self) -> Tensor:
        """``exp(logit_scale)``, at most ``max_logit_scale`` (past it the gradient stops, as OpenAI's clamp)."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def similarity(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """``logits_per_image`` ``(B_images, B_texts)``: scaled cosines of unit-length embeddings."""
        return self.scale() * image_embeds @ text_embeds.T

    def forward(
        self,
        pixel_values: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        caption_ids: Tensor | None = None,
        return_loss: bool = True,
    ) -> CLIPOutput:
        """Both towers and the similarity; the loss (``return_loss``, the default) needs one caption
        per image. ``caption_ids`` ``(B,)``: equal ids mark pairs with the same caption."""
        image_embeds = self.encode_image(pixel_values)  # (B_i, P)
        text_embeds = self.encode_text(input_ids, attention_mask)  # (B_t, P)
        logits_per_image = self.similarity(image_embeds, text_embeds)  # (B_i, B_t)
        out = CLIPOutput(logits=logits_per_image, logits_per_text=logits_per_image.T,
                         image_embeds=image_embeds, text_embeds=text_embeds)  # fmt: skip
        out.metrics["logit_scale"] = self.scale().detach()
        if return_loss:
            if image_embeds.shape[0] != text_embeds.shape[0]:
                raise ValueError(
                    f"the loss pairs image i with caption i: got {image_embeds.shape[0]} images and "
                    f"{text_embeds.shape[0]} captions (pass return_loss=False to only score them)"
                )
            out.loss = contrastive_loss(out.logits_per_text, caption_ids, self.config.duplicate_captions)
            out.metrics["accuracy"] = _image_to_text_accuracy(logits_per_image, caption_ids)
        return out
