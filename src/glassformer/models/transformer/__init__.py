"""The 2017 Transformer (Vaswani et al., "Attention Is All You Need"): the first encoder-decoder family.

``FAMILY`` declares its presets (``transformer-base`` and its ``-tiny`` twin) and that ``generate``
drives it as an encoder-decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.models.transformer import config as _cfg
from glassformer.models.transformer.config import TransformerConfig
from glassformer.models.transformer.model import Generator, Transformer
from glassformer.registry import Family

__all__ = ["FAMILY", "Generator", "Transformer", "TransformerConfig", "example_batch"]


def example_batch(config: TransformerConfig, batch_size: int = 2, src_len: int = 7, tgt_len: int = 6) -> dict[str, Tensor]:
    """A small random batch with padding in the last row, the shape a data loader would give."""
    g = torch.Generator().manual_seed(0)
    first = max(config.pad_token_id, config.bos_token_id, config.eos_token_id) + 1  # ordinary tokens after the specials
    src = torch.randint(first, config.vocab_size, (batch_size, src_len), generator=g)
    gold = torch.randint(first, config.tgt_vocab_size, (batch_size, tgt_len), generator=g)
    gold[:, -1] = config.eos_token_id
    src_attention_mask = torch.ones_like(src)
    tgt_attention_mask = torch.ones_like(gold)
    if batch_size > 1:  # the last row is shorter: right padding on both sides
        src[-1, -2:], src_attention_mask[-1, -2:] = config.pad_token_id, 0
        gold[-1, -2], gold[-1, -1] = config.eos_token_id, config.pad_token_id
        tgt_attention_mask[-1, -1] = 0
    bos = torch.full((batch_size, 1), config.bos_token_id)
    tgt = torch.cat([bos, gold[:, :-1]], dim=1).masked_fill(tgt_attention_mask == 0, config.pad_token_id)
    return {
        "src": src, "tgt": tgt, "src_attention_mask": src_attention_mask,
        "tgt_attention_mask": tgt_attention_mask, "labels": gold,
    }


_TRANSLATION = "glassformer.models.transformer.data:multi30k_translation"  # Multi30k, glassformer.data.multi30k

FAMILY = Family(
    name="transformer",
    model=Transformer,
    config=TransformerConfig,
    presets={
        "transformer-base": (
            _cfg.transformer_base, "Vaswani et al. 2017 base model: 6+6 post-norm layers, 512 wide, 8 heads, FFN 2048",
        ),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    generation="encoder-decoder",
    data={"transformer": _TRANSLATION, "multi30k": _TRANSLATION},
)
