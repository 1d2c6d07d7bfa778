"""BART (Lewis et al. 2019): a denoising encoder-decoder with learned positions and post-norm blocks.

``FAMILY`` declares the presets (``bart-base`` and ``bart-large``, the released models' shapes,
and ``bart-multi30k``, a ~7.7M-parameter model for the Multi30k experiment, each with a ``-tiny``
twin) and that ``generate`` drives BART as an encoder-decoder. ``hf.py`` reads and writes
transformers' ``BartForConditionalGeneration`` layout; the denoising objective (text infilling,
sentence permutation) is ``glassformer.data.denoising``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.models.bart import config as _cfg
from glassformer.models.bart.config import BartConfig
from glassformer.models.bart.model import Bart, shift_tokens_right
from glassformer.models.base import IGNORE_INDEX
from glassformer.registry import Family, Format

__all__ = ["FAMILY", "Bart", "BartConfig", "example_batch", "shift_tokens_right"]


def example_batch(
    config: BartConfig, batch_size: int = 2, src_len: int = 7, tgt_len: int = 6
) -> dict[str, Tensor]:
    """A small random batch as the denoising collator makes it: ``<s> ... </s>`` sources (the last row
    right-padded), labels ending in ``</s>`` (-100 after a shorter row's end) and the shifted decoder inputs."""
    g = torch.Generator().manual_seed(0)
    specials = (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.decoder_start_token_id)
    first = max(specials) + 1  # ordinary tokens after the specials
    src = torch.randint(first, config.vocab_size, (batch_size, src_len), generator=g)
    src[:, 0], src[:, -1] = config.bos_token_id, config.eos_token_id
    attention_mask = torch.ones_like(src)
    labels = torch.randint(first, config.vocab_size, (batch_size, tgt_len), generator=g)
    labels[:, 0], labels[:, -1] = config.bos_token_id, config.eos_token_id
    if batch_size > 1:  # the last row is shorter on both sides
        src[-1, -3:], attention_mask[-1, -3:] = config.pad_token_id, 0
        src[-1, -4] = config.eos_token_id
        labels[-1, -2], labels[-1, -1] = config.eos_token_id, IGNORE_INDEX
    decoder_input_ids = shift_tokens_right(labels, config.decoder_start_token_id, config.pad_token_id)
    return {
        "input_ids": src,
        "attention_mask": attention_mask,
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


_TRANSLATION = "glassformer.models.bart.data:multi30k_translation"  # Multi30k, glassformer.data.multi30k

FAMILY = Family(
    name="bart",
    model=Bart,
    config=BartConfig,
    presets={
        "bart-base": (
            _cfg.bart_base,
            "BART base (Lewis et al. 2019): 6+6 post-norm layers, 768 wide, 12 heads, 50k BPE",
        ),
        "bart-large": (_cfg.bart_large, "BART large: 12+12 post-norm layers, 1024 wide, 16 heads, 50k BPE"),
        "bart-multi30k": (
            _cfg.bart_multi30k,
            "small BART for Multi30k: 3+3 layers, 256 wide, 4 heads, 8k joint BPE, ~7.7M params",
        ),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    formats=(
        Format(
            "huggingface",
            load="glassformer.models.bart.hf:from_pretrained",
            save="glassformer.models.bart.hf:save_pretrained",
            exports="glassformer.models.bart.hf:architecture",
            model_types=("bart",),
        ),
    ),  # fmt: skip
    generation="encoder-decoder",
    data={
        "bart-multi30k": _TRANSLATION,
        "multi30k": _TRANSLATION,
        "multi30k-denoising": "glassformer.models.bart.data:multi30k_denoising",
    },
)
