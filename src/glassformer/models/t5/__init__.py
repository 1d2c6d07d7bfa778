"""T5 (Raffel et al. 2020): the text-to-text encoder-decoder, T5 1.0 and 1.1 as a config choice.

``FAMILY`` declares the presets (``t5-small``, ``t5-v1_1-small`` and ``t5-multi30k``, the small
model of the seq2seq experiment, each with a ``-tiny`` twin), that ``generate`` drives the model as
an encoder-decoder (the decoder starts from the pad token), and the Hugging Face format
(``hf.py``: ``T5ForConditionalGeneration``, both ways). Span corruption, T5's pretraining
objective, is ``glassformer.data.span_corruption``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from glassformer.models.base import IGNORE_INDEX
from glassformer.models.t5 import config as _cfg
from glassformer.models.t5.config import T5Config, check_task_prefix, check_tokenizer, with_prefix
from glassformer.models.t5.model import T5, shift_right
from glassformer.registry import Family, Format

__all__ = [
    "FAMILY", "T5", "T5Config", "check_task_prefix", "check_tokenizer", "example_batch", "shift_right", "with_prefix",
]  # fmt: skip


def example_batch(config: T5Config, batch_size: int = 2, src_len: int = 7, tgt_len: int = 6) -> dict[str, Tensor]:
    """A small random batch as a data loader gives it: right-padded sources, labels padded with -100."""
    g = torch.Generator().manual_seed(0)
    first = max(config.pad_token_id, config.eos_token_id) + 1  # ordinary tokens after the specials
    top = min(config.sentinel_ids, default=config.vocab_size)  # and below the sentinels
    src = torch.randint(first, top, (batch_size, src_len), generator=g)
    labels = torch.randint(first, top, (batch_size, tgt_len), generator=g)
    src[:, -1], labels[:, -1] = config.eos_token_id, config.eos_token_id
    attention_mask = torch.ones_like(src)
    if batch_size > 1:  # the last row is shorter on both sides
        src[-1, -3], src[-1, -2:], attention_mask[-1, -2:] = config.eos_token_id, config.pad_token_id, 0
        labels[-1, -2], labels[-1, -1] = config.eos_token_id, IGNORE_INDEX
    decoder_input_ids = shift_right(labels, config.decoder_start_token_id, config.pad_token_id)
    return {
        "input_ids": src, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids, "labels": labels,
    }  # fmt: skip


_TRANSLATION = "glassformer.models.t5.data:multi30k_translation"  # Multi30k, glassformer.data.multi30k

FAMILY = Family(
    name="t5",
    model=T5,
    config=T5Config,
    presets={
        "t5-small": (
            _cfg.t5_small, "T5 1.0 small (Raffel et al. 2020): 6+6 layers, 512 wide, ReLU FFN 2048, tied head, ~60M",
        ),
        "t5-v1_1-small": (
            _cfg.t5_v1_1_small, "T5 1.1 small: 8+8 layers, 512 wide, 6 heads, gated-GELU FFN 1024, untied head, ~77M",
        ),
        "t5-multi30k": (
            _cfg.t5_multi30k, "T5 1.1-style model for Multi30k en<->de with task prefixes: 3+3 layers, 256 wide, ~6.8M",
        ),
    },
    tiny=_cfg.tiny,
    example_batch=example_batch,
    formats=(
        Format("huggingface", load="glassformer.models.t5.hf:from_pretrained",
               save="glassformer.models.t5.hf:save_pretrained",
               exports="glassformer.models.t5.hf:architecture", model_types=("t5",)),
    ),  # fmt: skip
    generation="encoder-decoder",
    data={
        "t5-multi30k": _TRANSLATION,
        "multi30k": _TRANSLATION,
        "multi30k-span-corruption": "glassformer.models.t5.data:multi30k_span_corruption",
    },
)
