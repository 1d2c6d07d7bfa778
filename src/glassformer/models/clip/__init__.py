"""The CLIP family: contrastive image-text models (an image tower, a text tower, one shared space).

``CLIP`` and ``CLIPConfig`` cover OpenAI's ViT-B/32 shape and the small ``clip-shapes`` model the
synthetic shapes experiment trains; the image tower is glassformer's ViT (``models/vit``, the one
family another may build on). ``contrastive_loss`` is the symmetric InfoNCE with the choice of
what to do with pairs that share a caption. ``hf.from_pretrained`` / ``hf.save_pretrained`` read
and write Hugging Face's ``CLIPModel``; the tokenizer is ``glassformer.tokenizers.clip``.
"""

from __future__ import annotations

from typing import Any

import torch

from glassformer.models.clip import config as _cfg
from glassformer.models.clip.config import CLIPConfig, clip_vision
from glassformer.models.clip.model import CLIP, CLIPOutput, contrastive_loss
from glassformer.registry import Family, Format

__all__ = ["CLIP", "FAMILY", "CLIPConfig", "CLIPOutput", "clip_vision", "contrastive_loss", "example_batch"]


def example_batch(config: CLIPConfig, batch_size: int = 3) -> dict[str, Any]:
    """Random images and framed random captions (SOT ... EOT, EOT padding); rows 1 and 2 share a
    caption id (two wordings of one caption), so the duplicate-caption handling is exercised."""
    g = torch.Generator().manual_seed(0)
    v = config.vision
    pixels = torch.randn(batch_size, v.in_channels, v.image_size, v.image_size, generator=g)
    length = min(config.max_seq_len, 8)
    ids = torch.randint(0, min(config.bos_token_id, config.eos_token_id), (batch_size, length), generator=g)
    ids[:, 0] = config.bos_token_id
    mask = torch.ones_like(ids)
    for row in range(batch_size):
        end = length - 1 - row % 3  # captions of different lengths
        ids[row, end:] = config.eos_token_id
        mask[row, end + 1 :] = 0
    caption_ids = torch.tensor([min(i, 1) if i < 3 else i for i in range(batch_size)])
    return {"pixel_values": pixels, "input_ids": ids, "attention_mask": mask, "caption_ids": caption_ids}


FAMILY = Family(
    name="clip",
    model=CLIP,
    config=CLIPConfig,
    presets={
        "clip-shapes": (_cfg.clip_shapes, "CLIP for 64x64 synthetic shapes: 8x8 patches, both towers 4 blocks of width 128 (8.0M)"),
        "clip-vit-b32": (_cfg.clip_vit_b32, "OpenAI's ViT-B/32 CLIP shape: 224x224, 32x32 patches, 768 / 512 wide towers (151M)"),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    data={"clip-shapes": "glassformer.models.clip.data:build_shapes_data"},
    cli="glassformer.models.clip.cli",
    generation=None,
    default_preset="clip-shapes",
    formats=(
        Format("huggingface", load="glassformer.models.clip.hf:from_pretrained",
               save="glassformer.models.clip.hf:save_pretrained", exports="glassformer.models.clip.hf:architecture",
               model_types=("clip",)),
    ),  # fmt: skip
)
